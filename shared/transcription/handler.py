"""The transcription job: claim the message, download, prepare, transcribe, store — effectively once.

Order of guards, cheapest first:

1. a per-message Redis mutex (a semaphore of one, keyed by message id): a second delivery arriving while the
   first still runs gets ``RetryLater`` and finds the row COMPLETED when it comes back;
2. the global transcription semaphore (TRANSCRIPTION_MAX_IN_FLIGHT across every instance): full → ``RetryLater``;
3. the store's claim (``start_transcription``, owner = job id): COMPLETED → acknowledge without work; another
   job's live lease → ``RetryLater``; a missing row → ``Reject``.

The three "busy" answers are deferrals (``RetryLater(counts_attempt=False)``): the job was never tried, so
it keeps its attempt number and waiting in a backlog never exhausts its retries (``JOB_MAX_AGE_S`` bounds
it instead); failures of the work itself (429/5xx/timeouts from the download or OpenAI) count attempts.

Each delivery works in its own ``tempfile.mkdtemp`` directory, removed on exit whatever happens, so
concurrent jobs never share or delete each other's files. A ``Reject`` (refused URL, corrupt audio, too
large) marks the row FAILED with the reason; a ``RetryLater`` leaves it IN_PROGRESS for the next attempt,
except on the last attempt, when it is marked FAILED too.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shared.coordination.semaphore import Semaphore, SemaphoreFull
from shared.errors import Reject, RetryLater
from shared.jobs import Envelope, TranscriptionJob
from shared.metrics import mark_deduplicated
from shared.transcription.audio import AudioLimits, prepare_audio
from shared.transcription.download import Credentials, DownloadLimits, download_recording
from shared.transcription.openai_client import Transcriber, Transcript
from shared.transcription.urlpolicy import Resolver, UrlPolicy, system_resolver

if TYPE_CHECKING:
    from redis import Redis

    from shared.store import Store

__all__ = ["STORE_LEASE_S", "MetricsSink", "TranscriptionServices", "handle_transcription"]

log = logging.getLogger(__name__)

#: The store lease on a message while a job works on it: Flex Consumption's default functionTimeout (30 min).
STORE_LEASE_S = 1800.0
#: The per-message mutex and global-slot leases; renewed every third of this while the job runs.
REDIS_LEASE_S = 60.0


class MetricsSink(Protocol):
    """What the handler needs of ``shared.metrics.Metrics``."""

    def inc(self, name: str, amount: float = 1, **labels: Any) -> None: ...

    def observe(self, name: str, value: float, **labels: Any) -> None: ...


@dataclass(frozen=True)
class TranscriptionServices:
    """Everything one transcription job uses; built once per process (``shared.transcription.wiring``)."""

    store: Store
    redis: Redis
    slots: Semaphore
    transcriber: Transcriber
    url_policy: UrlPolicy
    download_limits: DownloadLimits
    credentials: Credentials | None
    audio_limits: AudioLimits
    max_attempts: int
    metrics: MetricsSink
    resolve: Resolver = system_resolver
    temp_root: Path | None = None
    store_lease_s: float = STORE_LEASE_S


def handle_transcription(job: Envelope[TranscriptionJob], services: TranscriptionServices) -> None:
    """Transcribe the recording of ``job.payload.message_id`` once and store the result.

    Raises ``RetryLater`` (busy, in progress elsewhere, 429/5xx, timeouts) or ``Reject`` (missing row,
    refused URL, access denied, too large, corrupt audio), after recording FAILED where that is final.
    """
    payload = job.payload
    mutex = Semaphore(services.redis, f"transcription-message:{payload.message_id}", limit=1,
                      lease_s=REDIS_LEASE_S)
    try:
        with mutex.hold(), services.slots.hold():
            _claim_and_run(job, services)
    except SemaphoreFull as exc:
        if exc.name == mutex.name:
            services.metrics.inc("banxway_transcription_deferred_total", reason="duplicate_delivery")
            raise RetryLater(f"another delivery of message {payload.message_id} is running",
                             retry_after_s=exc.retry_after_s, code="transcription_in_progress",
                             counts_attempt=False) from exc
        services.metrics.inc("banxway_transcription_deferred_total", reason="capacity")
        raise


def _claim_and_run(job: Envelope[TranscriptionJob], services: TranscriptionServices) -> None:
    from shared.store import TranscriptionOutcome

    message_id = job.payload.message_id
    start = services.store.start_transcription(message_id, owner=job.id, lease_s=services.store_lease_s)
    if start.outcome is TranscriptionOutcome.ALREADY_COMPLETED:
        log.info("message %s already transcribed; job %s acknowledged without work", message_id, job.id)
        mark_deduplicated()
        return
    if start.outcome is TranscriptionOutcome.MISSING:
        raise Reject(f"message {message_id} does not exist", code="message_missing")
    if start.outcome is TranscriptionOutcome.IN_PROGRESS:
        raise RetryLater(f"message {message_id} is being transcribed by another job",
                         retry_after_s=_seconds_until(start.lease_expires_at), code="transcription_in_progress",
                         counts_attempt=False)
    try:
        transcript = _transcribe(job, services)
    except Reject as exc:
        services.store.fail_transcription(message_id, error=f"{exc.code}: {exc.reason}")
        raise
    except RetryLater as exc:
        if job.attempt >= services.max_attempts:
            services.store.fail_transcription(
                message_id, error=f"{exc.code}: gave up after {job.attempt} attempts: {exc.reason}")
        raise
    services.store.complete_transcription(
        message_id, text=transcript.text, language=transcript.language, confidence=transcript.confidence,
        details=transcript.details(),
    )
    services.metrics.observe("banxway_transcription_audio_seconds", transcript.duration_s)
    log.info("message %s transcribed: %.0f s of audio in %d chunk(s), language %s", message_id,
             transcript.duration_s, transcript.chunks, transcript.language)


def _transcribe(job: Envelope[TranscriptionJob], services: TranscriptionServices) -> Transcript:
    # mkdtemp: a fresh private (0700) directory per delivery, whatever the job id; removed on every exit.
    with tempfile.TemporaryDirectory(prefix=f"bxw-transcription-{uuid.uuid4().hex[:8]}-",
                                     dir=services.temp_root) as work:
        work_dir = Path(work)
        recording = download_recording(
            job.payload.audio_url, work_dir, policy=services.url_policy, limits=services.download_limits,
            credentials=services.credentials, resolve=services.resolve,
        )
        chunks = prepare_audio(recording.path, work_dir, services.audio_limits)
        return services.transcriber.transcribe(chunks)


def _seconds_until(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return max(1.0, (moment - datetime.now(UTC)).total_seconds())
