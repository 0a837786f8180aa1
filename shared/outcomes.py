"""The one place that decides what happens to a queue message after its handler ran.

- success → return; the host deletes the message;
- ``RetryLater`` → put a copy back with ``attempt + 1`` and a visibility delay from exponential backoff with
  full jitter (never shorter than the far side's Retry-After), then return normally, so waiting never burns
  the host's dequeue count; after ``JOB_MAX_ATTEMPTS`` attempts → dead-letter;
- ``Reject`` (including an invalid message) → dead-letter with the reason and return normally;
- any other exception propagates: the host retries up to ``maxDequeueCount``, then moves the message to
  ``<queue>-poison`` itself.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.errors import Reject, RetryLater
from shared.jobs import Envelope, JobKind, parse_job
from shared.queues import MAX_VISIBILITY_DELAY_S, QueueOps

__all__ = [
    "JobObserver",
    "JobResult",
    "Outcome",
    "RetryPolicy",
    "full_jitter_delay_s",
    "run_job",
]

log = logging.getLogger(__name__)
_MAX_FAILED_REASON_CHARS = 500


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    #: The handler raised an unexpected exception; it propagates and the host retries (observers only).
    FAILED = "failed"


@dataclass(frozen=True)
class RetryPolicy:
    """How the boundary retries: attempts in all (the first included) and the backoff's base and cap."""

    max_attempts: int = 6
    base_delay_s: float = 2.0
    max_delay_s: float = 600.0
    #: Deferrals (``RetryLater(counts_attempt=False)``) stop once the job is this old.
    max_age_s: float = 24 * 3600.0


@dataclass(frozen=True)
class JobResult:
    """What the boundary did with one message."""

    outcome: Outcome
    queue: str
    kind: JobKind
    job: Envelope[Any] | None
    duration_s: float
    reason: str | None = None
    error_code: str | None = None
    delay_s: float | None = None


class JobObserver(Protocol):
    """Told about every finished message (metrics, telemetry). Must not raise.

    An observer may also define ``before_job(queue, job)``: called once the message parsed, right before
    the handler runs, in the handler's thread and context (e.g. to start a span).
    """

    def after_job(self, result: JobResult) -> None: ...


def full_jitter_delay_s(
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_after_s: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Delay before attempt ``attempt + 1``: uniform in [0, min(cap, base · 2^(attempt-1))], at least Retry-After.

    Full jitter spreads a burst of failures over the whole window instead of synchronising their retries.
    """
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** max(0, attempt - 1))
    delay = rng() * ceiling
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return float(min(delay, MAX_VISIBILITY_DELAY_S))


def run_job(
    *,
    kind: JobKind,
    queue: str,
    body: str | bytes,
    message_id: str | None,
    handler: Callable[[Envelope[Any]], None],
    queues: QueueOps,
    policy: RetryPolicy,
    observers: Sequence[JobObserver] = (),
    clock: Callable[[], float] = time.monotonic,
) -> JobResult:
    """Validate ``body`` as a ``kind`` job, run ``handler`` on it, and carry out the outcome.

    Returns what was done. Unexpected exceptions from the handler propagate (the host retries them).
    """
    started = clock()
    job: Envelope[Any] | None = None
    try:
        job = parse_job(kind, body, message_id=message_id)
        _notify_before(observers, queue, job)
        handler(job)
    except RetryLater as exc:
        assert job is not None  # parse_job raises Reject, never RetryLater
        result = _retry_or_give_up(
            exc, job, kind=kind, queue=queue, body=body, queues=queues, policy=policy, elapsed_s=clock() - started
        )
    except Reject as exc:
        attempts = job.attempt if job else 1
        queues.dead_letter(
            queue, body, reason=exc.reason, error_class=type(exc).__name__, attempts=attempts,
            job_id=job.id if job else message_id,
        )
        log.warning(
            "job dead-lettered: queue=%s job_id=%s reason=%s", queue, job.id if job else message_id, exc.reason
        )
        result = JobResult(
            Outcome.DEAD_LETTERED, queue, kind, job, clock() - started, reason=exc.reason, error_code=exc.code
        )
    except Exception as exc:
        failed = JobResult(
            Outcome.FAILED, queue, kind, job, clock() - started,
            reason=f"{type(exc).__name__}: {exc}"[:_MAX_FAILED_REASON_CHARS], error_code=type(exc).__name__,
        )
        _notify(observers, failed)
        raise
    else:
        result = JobResult(Outcome.COMPLETED, queue, kind, job, clock() - started)
        log.info("job completed: queue=%s job_id=%s attempt=%s", queue, job.id, job.attempt)
    _notify(observers, result)
    return result


def _retry_or_give_up(
    exc: RetryLater,
    job: Envelope[Any],
    *,
    kind: JobKind,
    queue: str,
    body: str | bytes,
    queues: QueueOps,
    policy: RetryPolicy,
    elapsed_s: float,
) -> JobResult:
    age_s = (datetime.now(UTC) - job.created_at).total_seconds()
    give_up = None
    if exc.counts_attempt and job.attempt >= policy.max_attempts:
        give_up = f"retries exhausted after {job.attempt} attempts: {exc.reason}"
    elif not exc.counts_attempt and age_s >= policy.max_age_s:
        give_up = f"deferred for {age_s:.0f} s, longer than the {policy.max_age_s:.0f} s limit: {exc.reason}"
    if give_up is not None:
        reason = give_up
        queues.dead_letter(
            queue, body, reason=reason, error_class=type(exc).__name__, attempts=job.attempt, job_id=job.id
        )
        log.warning("job dead-lettered: queue=%s job_id=%s reason=%s", queue, job.id, reason)
        return JobResult(Outcome.DEAD_LETTERED, queue, kind, job, elapsed_s, reason=reason, error_code=exc.code)
    delay_s = full_jitter_delay_s(job.attempt, policy, retry_after_s=exc.retry_after_s)
    queues.retry_later(queue, job, delay_s=delay_s, count_attempt=exc.counts_attempt)
    log.info(
        "job retried later: queue=%s job_id=%s attempt=%s delay_s=%.1f reason=%s",
        queue, job.id, job.attempt, delay_s, exc.reason,
    )
    return JobResult(
        Outcome.RETRIED, queue, kind, job, elapsed_s, reason=exc.reason, error_code=exc.code, delay_s=delay_s
    )


def _notify_before(observers: Sequence[JobObserver], queue: str, job: Envelope[Any]) -> None:
    for observer in observers:
        before = getattr(observer, "before_job", None)
        if before is None:
            continue
        try:
            before(queue, job)
        except Exception:  # an observer must never change a job's outcome
            log.exception("job observer %r failed", observer)


def _notify(observers: Sequence[JobObserver], result: JobResult) -> None:
    for observer in observers:
        try:
            observer.after_job(result)
        except Exception:  # an observer must never change a job's outcome
            log.exception("job observer %r failed", observer)
