"""The error tree: each class says what happens to the job next.

- ``RetryLater``: a transient failure (429, 5xx, timeout, rate-limit denial, open circuit). The job is put
  back on its queue with ``attempt + 1`` and a visibility delay; after the last attempt it is dead-lettered.
- ``Reject``: the job can never succeed as it is (invalid input, permanent 4xx, missing row). It is
  dead-lettered at once with the reason.
- ``ConfigurationError``: a setting is missing or malformed. It is raised, not caught by the job boundary,
  so the host's own retries and poison queue keep the message while an operator fixes the setting.

Service adapters subclass these and keep the cause with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "Reject", "RetryLater", "WorkerError"]


class WorkerError(Exception):
    """Base class of every error the workers raise on purpose."""

    #: A short machine-readable reason (``exotel_rate_limited``, ``invalid_payload`` ...).
    code: str = "worker_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def reason(self) -> str:
        """The human-readable reason recorded with the job's outcome."""
        return str(self)


class RetryLater(WorkerError):
    """Transient failure: try the job again later.

    ``retry_after_s`` is the earliest sensible retry time the far side asked for (a Retry-After header, the
    remaining open time of a circuit, a rate limiter's wait); the backoff never waits less than it.

    ``counts_attempt=False`` marks a *deferral* — the job was never tried (rate-limit denial, global pause,
    open circuit, a full semaphore) — so the copy keeps its attempt number; deferrals are bounded by the
    job's age (``JOB_MAX_AGE_S``) instead.
    """

    code = "retry_later"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        code: str | None = None,
        counts_attempt: bool = True,
    ) -> None:
        super().__init__(message, code=code)
        if retry_after_s is not None and retry_after_s < 0:
            retry_after_s = 0.0
        self.retry_after_s = retry_after_s
        self.counts_attempt = counts_attempt


class Reject(WorkerError):
    """Permanent failure: the job is dead-lettered with this reason and not retried."""

    code = "rejected"


class ConfigurationError(WorkerError):
    """A setting is missing or malformed; the message names the variable but never its value."""

    code = "configuration_error"
