"""The OpenAI stand-in validates requests like the real transcription API, driven through the openai SDK."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from devhost.standins.audio import generate_recording
from devhost.standins.openai import MAX_BODY_BYTES, OpenAIServer, running_openai_server


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with running_openai_server(api_key="sk-x") as running:
        yield running


@pytest.fixture
def client(server: OpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-x", base_url=server.base_url, max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_recording(tmp_path_factory.mktemp("a") / "call.wav", 95)


def test_verbose_json_segments_span_the_uploads_real_duration(client: openai.OpenAI, wav: Path) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=wav, response_format="verbose_json",
                                                timestamp_granularities=["segment"])
    assert result.duration == pytest.approx(95.0, abs=0.1)
    assert result.language == "english"
    assert result.segments is not None
    assert [s.start for s in result.segments][:3] == [0.0, 10.0, 20.0]
    assert result.segments[-1].end == pytest.approx(95.0, abs=0.1)
    assert len({s.avg_logprob for s in result.segments}) > 1


def test_language_hint_must_be_iso_639_1_and_comes_back_as_a_name(client: openai.OpenAI, wav: Path) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=wav, response_format="verbose_json",
                                                language="hi")
    assert result.language == "hindi"
    with pytest.raises(openai.BadRequestError, match="ISO-639-1"):
        client.audio.transcriptions.create(model="whisper-1", file=wav, language="english")


def test_file_without_extension_is_an_unrecognized_format(client: openai.OpenAI, wav: Path) -> None:
    with pytest.raises(openai.BadRequestError, match="Unrecognized file format"):
        client.audio.transcriptions.create(model="whisper-1", file=("call", wav.read_bytes(), "audio/wav"))


def test_corrupt_audio_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="corrupted or unsupported"):
        client.audio.transcriptions.create(model="whisper-1", file=("call.mp3", b"\x00garbage" * 500, "audio/mpeg"))


def test_body_over_25_mib_is_a_413_with_the_real_error_body(client: openai.OpenAI) -> None:
    big = io.BytesIO(b"\0" * (MAX_BODY_BYTES + 1))
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", big, "audio/wav"))
    assert caught.value.status_code == 413
    assert "Maximum content size limit (26214400) exceeded" in caught.value.message
    assert caught.value.type == "server_error"


def test_verbose_json_is_refused_for_gpt_4o_models(client: openai.OpenAI, wav: Path) -> None:
    with pytest.raises(openai.BadRequestError, match="not compatible"):
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=wav, response_format="verbose_json")
    assert client.audio.transcriptions.create(model="gpt-4o-transcribe", file=wav).text


def test_injected_429_carries_retry_after_and_500_follows(server: OpenAIServer, client: openai.OpenAI,
                                                          wav: Path) -> None:
    server.fail_next(429, retry_after_s=3)
    server.fail_next(500)
    with pytest.raises(openai.RateLimitError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=wav)
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["x-request-id"].startswith("req_")
    with pytest.raises(openai.InternalServerError):
        client.audio.transcriptions.create(model="whisper-1", file=wav)
    assert client.audio.transcriptions.create(model="whisper-1", file=wav).text


def test_wrong_key_is_401(server: OpenAIServer, wav: Path) -> None:
    other = openai.OpenAI(api_key="sk-wrong", base_url=server.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        other.audio.transcriptions.create(model="whisper-1", file=wav)


def test_azure_deployment_route_with_api_key_header(server: OpenAIServer, wav: Path) -> None:
    azure = openai.AzureOpenAI(api_key="sk-x", azure_endpoint=server.azure_endpoint, api_version="2024-10-21",
                               max_retries=0)
    result = azure.audio.transcriptions.create(model="my-whisper", file=wav, response_format="verbose_json")
    assert result.duration == pytest.approx(95.0, abs=0.1)
    assert server.requests[-1]["model"] == "my-whisper"
    assert server.requests[-1]["azure"] is True


def test_an_unknown_url_is_a_404_with_the_apis_error_body(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.list()
    assert caught.value.status_code == 404
    assert "Invalid URL (GET /v1/models)" in str(caught.value)
