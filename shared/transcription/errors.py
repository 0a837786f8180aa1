"""Transcription errors, each saying what happens to the job next (see ``shared.errors``)."""

from __future__ import annotations

from shared.errors import Reject, RetryLater

__all__ = [
    "AudioUnreadable",
    "RecordingAccessDenied",
    "RecordingNotReady",
    "RecordingTooLarge",
    "RecordingUnavailable",
    "TranscriptionRateLimited",
    "TranscriptionRejected",
    "TranscriptionUnavailable",
    "UnsafeRecordingUrl",
]


class UnsafeRecordingUrl(Reject):
    """The recording URL (or a redirect) points where we never fetch from: scheme, host or address."""

    code = "recording_url_refused"


class RecordingAccessDenied(Reject):
    """The recording server refused our credentials (401/403), as Exotel does for private recordings."""

    code = "recording_access_denied"


class RecordingTooLarge(Reject):
    """The recording is over RECORDING_MAX_BYTES (by Content-Length or while streaming)."""

    code = "recording_too_large"


class RecordingNotReady(RetryLater):
    """404: Exotel publishes recordings 1-15 minutes after the call ends; try again later."""

    code = "recording_not_ready"


class RecordingUnavailable(RetryLater):
    """The recording server timed out, was unreachable, or answered 429/5xx."""

    code = "recording_unavailable"


class AudioUnreadable(Reject):
    """The recording is not decodable audio (corrupt, truncated, or not audio at all)."""

    code = "audio_unreadable"


class TranscriptionRateLimited(RetryLater):
    """OpenAI answered 429; the job is delayed by its Retry-After."""

    code = "openai_rate_limited"


class TranscriptionUnavailable(RetryLater):
    """OpenAI timed out, was unreachable, or answered 408/409/5xx."""

    code = "openai_unavailable"


class TranscriptionRejected(Reject):
    """OpenAI refused the request permanently (400, 404, 413, 422)."""

    code = "openai_rejected"
