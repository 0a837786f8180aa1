"""The OpenAI adapter: one upload per chunk, errors mapped to our outcomes, chunk segments stitched.

**One retry layer: ours.** The SDK is built with ``max_retries=0``; a 429, 5xx, 408/409, timeout or connection
failure becomes ``RetryLater`` (``TranscriptionRateLimited`` / ``TranscriptionUnavailable``) carrying the
server's ``retry-after-ms`` / ``retry-after``, and the job boundary puts the message back with that delay.
Reasons: an in-process retry would hold a global transcription slot and the function's time budget while
sleeping, would re-upload up to 25 MiB on each try, and would stack on top of queue redelivery (the SDK's
retries times our attempts). The SDK also gives up silently on a Retry-After over 120 s; the queue can
wait any length.

Works with OpenAI, OpenAI-compatible servers (``OPENAI_BASE_URL``) and Azure OpenAI (``OPENAI_BASE_URL`` as
the resource endpoint plus ``OPENAI_API_VERSION``; ``TRANSCRIPTION_MODEL`` is then the deployment name).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.transcription.audio import Chunk
from shared.transcription.errors import (
    TranscriptionRateLimited,
    TranscriptionRejected,
    TranscriptionUnavailable,
)
from shared.transcription.languages import to_iso_code

if TYPE_CHECKING:
    from openai import OpenAI

__all__ = ["Segment", "Transcriber", "Transcript", "build_openai_client", "confidence_from_segments"]

log = logging.getLogger(__name__)

_CONTENT_TYPES = {".mp3": "audio/mpeg", ".mpga": "audio/mpeg", ".mpeg": "audio/mpeg", ".wav": "audio/wav",
                  ".ogg": "audio/ogg", ".oga": "audio/ogg", ".webm": "audio/webm", ".flac": "audio/flac",
                  ".m4a": "audio/mp4", ".mp4": "audio/mp4"}
_SEGMENT_FORMATS = ("verbose_json",)
_PROMPT_TAIL_CHARS = 200


def build_openai_client(settings: Settings) -> OpenAI:
    """The SDK client from settings: explicit timeouts, ``max_retries=0`` (see the module docstring)."""
    import openai

    settings.require("OPENAI_API_KEY")
    assert settings.openai_api_key is not None
    key = settings.openai_api_key.get_secret_value()
    timeout = openai.Timeout(settings.openai_timeout_s, connect=10.0)
    if settings.openai_api_version:
        settings.require("OPENAI_BASE_URL")
        assert settings.openai_base_url is not None
        return openai.AzureOpenAI(api_key=key, azure_endpoint=settings.openai_base_url,
                                  api_version=settings.openai_api_version, max_retries=0, timeout=timeout)
    return openai.OpenAI(api_key=key, base_url=settings.openai_base_url, max_retries=0, timeout=timeout)


@dataclass(frozen=True)
class Segment:
    """A stretch of transcript, its times in seconds from the start of the whole recording."""

    start_s: float
    end_s: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None

    def as_json(self, index: int) -> dict[str, Any]:
        return {"id": index, "start": round(self.start_s, 3), "end": round(self.end_s, 3), "text": self.text,
                "avg_logprob": self.avg_logprob, "no_speech_prob": self.no_speech_prob}


@dataclass(frozen=True)
class Transcript:
    """The stitched result of every chunk."""

    text: str
    language: str | None
    confidence: float | None
    duration_s: float
    model: str
    chunks: int
    segments: list[Segment] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        """What goes into ``metadata.transcription`` (besides what the store adds)."""
        return {"duration": round(self.duration_s, 3), "model": self.model, "chunks": self.chunks,
                "segments": [segment.as_json(i) for i, segment in enumerate(self.segments)]}


def confidence_from_segments(segments: Sequence[Segment]) -> float | None:
    """Duration-weighted mean of ``exp(avg_logprob)`` (the geometric-mean token probability) over segments,
    rounded to two places for ``numeric(3,2)``; None when the model gave no log-probabilities."""
    weighted = [(max(s.end_s - s.start_s, 0.01), math.exp(s.avg_logprob)) for s in segments
                if s.avg_logprob is not None]
    if not weighted:
        return None
    total = sum(weight for weight, _ in weighted)
    value = sum(weight * probability for weight, probability in weighted) / total
    return round(min(1.0, max(0.0, value)), 2)


class Transcriber:
    """Transcribes prepared chunks with one model, language hint and response format."""

    def __init__(self, client: OpenAI, *, model: str, language: str | None, response_format: str) -> None:
        if model.startswith("gpt-4o") and response_format in ("verbose_json", "srt", "vtt"):
            raise ConfigurationError(
                f"invalid settings: TRANSCRIPTION_RESPONSE_FORMAT {response_format} is not supported by "
                f"TRANSCRIPTION_MODEL {model}; use json (or whisper-1 for segment timestamps)"
            )
        self.client, self.model, self.language, self.response_format = client, model, language, response_format

    @classmethod
    def from_settings(cls, client: OpenAI, settings: Settings) -> Transcriber:
        """TRANSCRIPTION_MODEL, TRANSCRIPTION_LANGUAGE (None = detect) and TRANSCRIPTION_RESPONSE_FORMAT."""
        return cls(client, model=settings.transcription_model, language=settings.transcription_language,
                   response_format=settings.transcription_response_format)

    def transcribe(self, chunks: Sequence[Chunk], *, before_chunk: Callable[[], None] | None = None) -> Transcript:
        """Transcribe every chunk in order and stitch them. Raises ``TranscriptionRateLimited``,
        ``TranscriptionUnavailable``, ``TranscriptionRejected`` or ``ConfigurationError``.

        ``before_chunk`` runs before each upload and may raise to stop (e.g. the job's slot was lost)."""
        texts: list[str] = []
        segments: list[Segment] = []
        languages: list[str] = []
        for index, chunk in enumerate(chunks):
            if before_chunk is not None:
                before_chunk()
            prompt = " ".join(texts)[-_PROMPT_TAIL_CHARS:] or None
            result = self._create(chunk, prompt=prompt if "diarize" not in self.model else None)
            log.info("transcribed chunk %d/%d (%.0f s at %.0f s)", index + 1, len(chunks), chunk.duration_s,
                     chunk.offset_s)
            text = result if isinstance(result, str) else str(getattr(result, "text", "") or "")
            texts.append(text.strip())
            language = getattr(result, "language", None)
            if language:
                languages.append(str(language))
            segments.extend(_shifted(getattr(result, "segments", None) or [], chunk))
        detected = to_iso_code(max(set(languages), key=languages.count)) if languages else None
        last = chunks[-1]
        return Transcript(text=" ".join(t for t in texts if t), language=detected or self.language,
                          confidence=confidence_from_segments(segments), duration_s=last.offset_s + last.duration_s,
                          model=self.model, chunks=len(chunks), segments=segments)

    def _create(self, chunk: Chunk, *, prompt: str | None) -> Any:
        import openai

        options: dict[str, Any] = {"response_format": self.response_format}
        if self.language:
            options["language"] = self.language
        if prompt:
            options["prompt"] = prompt
        if self.response_format in _SEGMENT_FORMATS:
            options["timestamp_granularities"] = ["segment"]
        suffix = chunk.path.suffix.lower()
        try:
            with chunk.path.open("rb") as audio:
                return self.client.audio.transcriptions.create(
                    model=self.model, file=(f"recording{suffix}", audio, _CONTENT_TYPES.get(suffix, "audio/mpeg")),
                    **options,
                )
        except openai.APIStatusError as exc:
            raise _status_error(exc) from exc
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            raise TranscriptionUnavailable(f"OpenAI unreachable or timed out: {type(exc).__name__}") from exc


def _shifted(raw_segments: Sequence[Any], chunk: Chunk) -> list[Segment]:
    shifted = []
    for raw in raw_segments:
        start, end = float(raw.start), float(raw.end)
        shifted.append(Segment(start_s=chunk.offset_s + start, end_s=chunk.offset_s + min(end, chunk.duration_s),
                               text=str(raw.text).strip(), avg_logprob=getattr(raw, "avg_logprob", None),
                               no_speech_prob=getattr(raw, "no_speech_prob", None)))
    return shifted


def _retry_after_s(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        try:
            if value is not None:
                return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP-date: fall back to our own backoff
    return None


def _status_error(exc: Any) -> Exception:
    status = int(exc.status_code)
    detail = f"OpenAI answered {status}: {exc.message} (request {exc.request_id or '?'})"
    retry_after_s = _retry_after_s(getattr(exc.response, "headers", None))
    if status == 429:
        return TranscriptionRateLimited(detail, retry_after_s=retry_after_s)
    if status in (408, 409) or status >= 500:
        return TranscriptionUnavailable(detail, retry_after_s=retry_after_s)
    if status in (401, 403, 404):
        return ConfigurationError(
            f"{detail}; check OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_API_VERSION and TRANSCRIPTION_MODEL"
        )
    return TranscriptionRejected(detail)
