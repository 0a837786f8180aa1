"""The OpenAI adapter: one retry layer (ours), error mapping, stitching, ISO languages, derived confidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from devhost.standins.audio import generate_recording
from devhost.standins.openai import OpenAIServer
from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.transcription.audio import Chunk
from shared.transcription.errors import TranscriptionRateLimited, TranscriptionRejected, TranscriptionUnavailable
from shared.transcription.languages import to_iso_code
from shared.transcription.openai_client import Segment, Transcriber, build_openai_client, confidence_from_segments
from tests.support.transcription import OPENAI_KEY


def transcriber(server: OpenAIServer, **env: str) -> Transcriber:
    settings = Settings.from_env({"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": server.base_url,
                                  "OPENAI_TIMEOUT_S": "30", **env})
    return Transcriber.from_settings(build_openai_client(settings), settings)


@pytest.fixture(scope="module")
def chunk(tmp_path_factory: pytest.TempPathFactory) -> Chunk:
    path = generate_recording(tmp_path_factory.mktemp("c") / "c.mp3", 25, fmt="mp3")
    return Chunk(path=path, offset_s=0.0, duration_s=25.0)


def test_a_429_is_one_request_then_retry_later_with_the_servers_delay(
    openai_server: OpenAIServer, chunk: Chunk
) -> None:
    openai_server.fail_next(429, retry_after_s=12)
    with pytest.raises(TranscriptionRateLimited) as caught:
        transcriber(openai_server).transcribe([chunk])
    assert caught.value.retry_after_s == 12.0
    assert "rate_limit" not in caught.value.reason or "429" in caught.value.reason
    assert openai_server.requests == []  # the SDK did not retry on its own (max_retries=0)


def test_a_500_is_retry_later_and_a_400_is_rejected(openai_server: OpenAIServer, chunk: Chunk, tmp_path: Path) -> None:
    openai_server.fail_next(500)
    with pytest.raises(TranscriptionUnavailable, match="500"):
        transcriber(openai_server).transcribe([chunk])
    garbage = tmp_path / "x.mp3"
    garbage.write_bytes(b"\0junk" * 100)
    with pytest.raises(TranscriptionRejected, match="corrupted"):
        transcriber(openai_server).transcribe([Chunk(garbage, 0.0, 1.0)])


def test_wrong_api_key_is_a_configuration_error(openai_server: OpenAIServer, chunk: Chunk) -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "sk-wrong", "OPENAI_BASE_URL": openai_server.base_url})
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        Transcriber.from_settings(build_openai_client(settings), settings).transcribe([chunk])


def test_unreachable_server_is_retry_later(chunk: Chunk) -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                                  "OPENAI_TIMEOUT_S": "5"})
    with pytest.raises(TranscriptionUnavailable, match="unreachable"):
        Transcriber.from_settings(build_openai_client(settings), settings).transcribe([chunk])


def test_chunks_are_stitched_with_their_offsets(openai_server: OpenAIServer, chunk: Chunk) -> None:
    second = Chunk(path=chunk.path, offset_s=25.0, duration_s=25.0)
    result = transcriber(openai_server).transcribe([chunk, second])
    assert [s.start_s for s in result.segments] == [0.0, 10.0, 20.0, 25.0, 35.0, 45.0]
    assert result.duration_s == 50.0
    assert result.language == "en"
    assert result.chunks == 2


def test_language_hint_is_sent_and_the_answer_stored_as_an_iso_code(openai_server: OpenAIServer,
                                                                    chunk: Chunk) -> None:
    result = transcriber(openai_server, TRANSCRIPTION_LANGUAGE="hi").transcribe([chunk])
    assert openai_server.requests[-1]["language"] == "hi"
    assert result.language == "hi"
    transcriber(openai_server).transcribe([chunk])
    assert openai_server.requests[-1]["language"] is None  # auto-detect by default


def test_json_format_gives_text_without_confidence(openai_server: OpenAIServer, chunk: Chunk) -> None:
    result = transcriber(openai_server, TRANSCRIPTION_MODEL="gpt-4o-transcribe",
                         TRANSCRIPTION_RESPONSE_FORMAT="json").transcribe([chunk])
    assert result.text.startswith("Audio from 0")
    assert result.confidence is None
    assert result.language is None


def test_verbose_json_with_a_gpt_4o_model_is_a_configuration_error(openai_server: OpenAIServer) -> None:
    with pytest.raises(ConfigurationError, match="TRANSCRIPTION_RESPONSE_FORMAT"):
        transcriber(openai_server, TRANSCRIPTION_MODEL="gpt-4o-transcribe")


def test_azure_openai_through_endpoint_and_api_version(openai_server: OpenAIServer, chunk: Chunk) -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_server.azure_endpoint,
                                  "OPENAI_API_VERSION": "2024-10-21", "TRANSCRIPTION_MODEL": "whisper-deploy"})
    result = Transcriber.from_settings(build_openai_client(settings), settings).transcribe([chunk])
    assert result.duration_s == 25.0
    assert openai_server.requests[-1]["azure"] is True
    assert openai_server.requests[-1]["model"] == "whisper-deploy"


@pytest.mark.parametrize(("given", "code"), [("english", "en"), ("Hindi", "hi"), ("en", "en"), ("en-US", "en"),
                                             ("javanese", "jv"), ("burmese", "my"), ("klingon", None), (None, None)])
def test_whisper_language_names_become_iso_codes(given: str | None, code: str | None) -> None:
    assert to_iso_code(given) == code


def test_confidence_follows_the_models_log_probabilities() -> None:
    sure = [Segment(0, 10, "a", avg_logprob=-0.05)]
    unsure = [Segment(0, 10, "a", avg_logprob=-1.2)]
    assert confidence_from_segments(sure) == 0.95
    assert confidence_from_segments(unsure) == 0.3
    assert confidence_from_segments([Segment(0, 10, "a")]) is None
