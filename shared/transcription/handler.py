"""The transcription job: claim the message, download, prepare, transcribe, store — effectively once.

Order of guards, cheapest first:

1. a per-message Redis mutex (a semaphore of one, keyed by message id): a second delivery arriving while the
   first still runs gets ``RetryLater`` and finds the row COMPLETED when it comes back;
2. the global transcription semaphore (TRANSCRIPTION_MAX_IN_FLIGHT across every instance): full → ``RetryLater``;
3. the store's claim (``start_transcription``), owned by *this delivery* (job id + a fresh token): COMPLETED →
   acknowledge without work; any other live lease — another job's, or another delivery of this same job when
   Redis lost the mutex (the database is the record) → ``RetryLater``; a missing row → ``Reject``.

The three "busy" answers are deferrals (``RetryLater(counts_attempt=False)``): the job was never tried, so
it keeps its attempt number and waiting in a backlog never exhausts its retries (``JOB_MAX_AGE_S`` bounds
it instead); failures of the work itself (429/5xx/timeouts from the download or OpenAI) count attempts.

The global slot's lease is checked between stages (before the transcode and before each chunk upload): when a
renewal found it expired, the slot may already be someone else's, so the job stops with a deferral
(``transcription_slot_lost``) rather than exceed the cap.

Each delivery works in its own ``tempfile.mkdtemp`` directory, removed on exit whatever happens, so
concurrent jobs never share or delete each other's files.

What the row says when a delivery ends without a transcript:

- ``Reject`` (refused URL, corrupt audio, too large) → FAILED with the reason;
- ``RetryLater`` → the row stays IN_PROGRESS and the claim is given back at once (``release_transcription``)
  so the retried copy can claim it; FAILED instead when the boundary is about to dead-letter the job — the
  last counted attempt, or a deferral of a job older than ``JOB_MAX_AGE_S`` (this also covers deferrals
  before the claim: full slots, Redis unavailable; not "another delivery is working on it");
- any other exception (``ConfigurationError`` from an OpenAI 401/403/404, a store error, ``OSError`` such as a
  full disk) → FAILED with the reason, then re-raised so the host retries the message and finally moves it to
  ``-poison``. The handler cannot see the host's dequeue count (``run_message`` passes only the body and id),
  so it cannot tell the last dequeue from the first; recording FAILED every time is safe because a redelivery
  claims a FAILED row again (``start_transcription`` clears the error) and the row shows the latest failure.

Reasons are our own messages (a ``WorkerError``'s code and reason, never a setting's value); the text of an
unexpected exception, which is not ours, goes through ``shared.redaction.redact`` first (settings secrets,
phone numbers, addresses masked).
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shared.coordination.semaphore import Lease, Semaphore, SemaphoreFull, SemaphoreUnavailable
from shared.errors import Reject, RetryLater, WorkerError
from shared.jobs import Envelope, TranscriptionJob
from shared.metrics import mark_deduplicated
from shared.redaction import redact
from shared.transcription.audio import AudioLimits, prepare_audio
from shared.transcription.download import Credentials, DownloadLimits, download_recording
from shared.transcription.openai_client import Transcriber, Transcript
from shared.transcription.urlpolicy import Resolver, UrlPolicy, system_resolver

if TYPE_CHECKING:
    from redis import Redis

    from shared.store import Store

__all__ = ["SLOT_LOST_CODE", "STORE_LEASE_S", "MetricsSink", "TranscriptionServices", "handle_transcription"]

log = logging.getLogger(__name__)

#: The store lease on a message while a job works on it: Flex Consumption's default functionTimeout (30 min).
STORE_LEASE_S = 1800.0
#: The per-message mutex and global-slot leases; renewed every third of this while the job runs.
REDIS_LEASE_S = 60.0
#: The deferral code when the global slot's lease expired while the job ran.
SLOT_LOST_CODE = "transcription_slot_lost"
#: A deferral this close to ``max_age_s`` is treated as over-age: the boundary measures the age a moment later.
#: Marking FAILED a little early is harmless (a later delivery claims a FAILED row again).
_AGE_MARGIN_S = 60.0


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
    #: ``JOB_MAX_AGE_S``: the boundary dead-letters a deferral of a job this old.
    max_age_s: float = 24 * 3600.0


def handle_transcription(job: Envelope[TranscriptionJob], services: TranscriptionServices) -> None:
    """Transcribe the recording of ``job.payload.message_id`` once and store the result.

    Raises ``RetryLater`` (busy, in progress elsewhere, slot lost, 429/5xx, timeouts) or ``Reject`` (missing
    row, refused URL, access denied, too large, corrupt audio), after recording FAILED where that is final;
    other exceptions propagate after recording FAILED (see the module docstring).
    """
    payload = job.payload
    mutex = Semaphore(services.redis, f"transcription-message:{payload.message_id}", limit=1,
                      lease_s=REDIS_LEASE_S)
    try:
        with mutex.hold(), services.slots.hold() as slot:
            _claim_and_run(job, services, slot)
    except SemaphoreFull as exc:
        if exc.name == mutex.name:  # another delivery is working on it: it records the outcome, not us
            services.metrics.inc("banxway_transcription_deferred_total", reason="duplicate_delivery")
            raise RetryLater(f"another delivery of message {payload.message_id} is running",
                             retry_after_s=exc.retry_after_s, code="transcription_in_progress",
                             counts_attempt=False) from exc
        services.metrics.inc("banxway_transcription_deferred_total", reason="capacity")
        _fail_if_given_up(job, services, exc)
        raise
    except SemaphoreUnavailable as exc:
        _fail_if_given_up(job, services, exc)
        raise


def _claim_and_run(job: Envelope[TranscriptionJob], services: TranscriptionServices, slot: Lease) -> None:
    from shared.store import TranscriptionOutcome

    message_id = job.payload.message_id
    owner = f"{job.id}:{uuid.uuid4().hex}"  # this delivery only: a duplicate delivery of the job is refused
    start = services.store.start_transcription(message_id, owner=owner, lease_s=services.store_lease_s)
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
        transcript = _transcribe(job, services, slot)
        services.store.complete_transcription(
            message_id, text=transcript.text, language=transcript.language, confidence=transcript.confidence,
            details=transcript.details(),
        )
    except Reject as exc:
        _record_failure(services, message_id, f"{exc.code}: {exc.reason}")
        raise
    except RetryLater as exc:
        if not _fail_if_given_up(job, services, exc):
            _release_claim(services, message_id, owner)
        raise
    except Exception as exc:
        # Unexpected: the host retries, then poisons the message. Record why now (the handler cannot see the
        # dequeue count); a redelivery claims the FAILED row again.
        _record_failure(services, message_id, redact(_describe(exc)))
        raise
    services.metrics.observe("banxway_transcription_audio_seconds", transcript.duration_s)
    log.info("message %s transcribed: %.0f s of audio in %d chunk(s), language %s", message_id,
             transcript.duration_s, transcript.chunks, transcript.language)


def _transcribe(job: Envelope[TranscriptionJob], services: TranscriptionServices, slot: Lease) -> Transcript:
    # mkdtemp: a fresh private (0700) directory per delivery, whatever the job id; removed on every exit.
    with tempfile.TemporaryDirectory(prefix=f"bxw-transcription-{uuid.uuid4().hex[:8]}-",
                                     dir=services.temp_root) as work:
        work_dir = Path(work)
        recording = download_recording(
            job.payload.audio_url, work_dir, policy=services.url_policy, limits=services.download_limits,
            credentials=services.credentials, resolve=services.resolve,
        )

        def ensure_slot() -> None:
            if slot.lost:
                services.metrics.inc("banxway_transcription_deferred_total", reason="slot_lost")
            slot.ensure_held(code=SLOT_LOST_CODE)

        ensure_slot()
        chunks = prepare_audio(recording.path, work_dir, services.audio_limits)
        return services.transcriber.transcribe(chunks, before_chunk=ensure_slot)


def _fail_if_given_up(job: Envelope[TranscriptionJob], services: TranscriptionServices, exc: RetryLater) -> bool:
    """Record FAILED when the boundary will dead-letter ``job`` for ``exc``; True if it did."""
    if exc.counts_attempt:
        if job.attempt < services.max_attempts:
            return False
        reason = f"gave up after {job.attempt} attempts"
    else:
        age_s = (datetime.now(UTC) - job.created_at).total_seconds()
        if age_s + _AGE_MARGIN_S < services.max_age_s:
            return False
        reason = f"deferred for {age_s:.0f} s, longer than the {services.max_age_s:.0f} s limit"
    _record_failure(services, job.payload.message_id, f"{exc.code}: {reason}: {exc.reason}")
    return True


def _record_failure(services: TranscriptionServices, message_id: str, error: str) -> None:
    """FAILED with ``error``; a store failure here is logged, never raised over the original error."""
    try:
        services.store.fail_transcription(message_id, error=error)
    except Exception:
        log.warning("message %s: could not record the transcription failure", message_id, exc_info=True)


def _release_claim(services: TranscriptionServices, message_id: str, owner: str) -> None:
    """Give the claim back so the retry can take it; if that fails, the lease expires by itself."""
    try:
        services.store.release_transcription(message_id, owner=owner)
    except Exception:
        log.warning("message %s: could not release the transcription claim; it expires in %.0f s", message_id,
                    services.store_lease_s, exc_info=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WorkerError):
        return f"{exc.code}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _seconds_until(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return max(1.0, (moment - datetime.now(UTC)).total_seconds())
