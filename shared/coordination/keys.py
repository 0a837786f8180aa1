"""Every Redis key prefix in one place, namespaced so one Redis can serve several environments."""

__all__ = [
    "CIRCUIT_PREFIX",
    "EMAIL_POLL_PENDING_PREFIX",
    "METRICS_PREFIX",
    "RATE_LIMIT_PREFIX",
    "ROOT",
    "SEMAPHORE_PREFIX",
]

ROOT = "bxw"
RATE_LIMIT_PREFIX = f"{ROOT}:ratelimit"
CIRCUIT_PREFIX = f"{ROOT}:circuit"
SEMAPHORE_PREFIX = f"{ROOT}:semaphore"
METRICS_PREFIX = f"{ROOT}:metrics"
#: ``<prefix>:<account id>`` is set while a POLL_INBOX job for that account is queued (fan-out dedupe).
EMAIL_POLL_PENDING_PREFIX = f"{ROOT}:email:poll-pending"
