"""The WhatsApp send handler: exactly-once effect on an at-least-once queue, rate-limited, circuit-broken.

Flow for one job (``SEND_MESSAGE`` / ``SEND_TEMPLATE`` / ``SEND_MEDIA``; the payload is validated by
``shared.jobs`` before we get here: phone numbers, text length, unknown actions):

1. claim the send in ``outbound_dispatch`` (``store.claim_send``) *before* calling Exotel:
   already sent → acknowledge without calling Exotel; a live claim elsewhere → retry later; a stale claim
   left by a crashed attempt → marked for reconciliation and dead-lettered with that reason (never
   re-sent blindly); no message row → reject;
2. ask the shared circuit breaker, then book a slot in the shared rate limiter (lane from the queue and
   the job's ``priority``) and wait for it; either refusing → release the claim, retry later. Any other
   error before the call (Redis unreachable) also releases the claim, then propagates: Exotel was never
   called, so a redelivery may send. The circuit is asked first so an open circuit never burns rate-limit
   slots; a half-open probe that gets no slot hands the probe back (``release_probe``);
3. call Exotel with ``custom_data`` = our message id:
   success → ``complete_send`` (SENT, external_id = sid, sent_at, error fields cleared);
   429 → release, pause every sender for Retry-After, retry later (Exotel answered: a circuit success);
   5xx / refused connection → count a circuit failure, release, retry later (dead letter after the
   configured attempts, with the reason);
   timeout after sending → ``mark_send_unknown`` and dead-letter for reconciliation;
   item failure / 400 → ``fail_send`` (FAILED, error_message, failed_at) and reject;
   request-level 401 / 402 / 403 / 404 (account or configuration problems — wrong key, plan, EXOTEL_SID or
   API URL — not the message's) → release and reject, so the dead letter can be replayed once fixed.

Once Exotel has answered, the store outcome is written *first*; the circuit, the 429 pause and metrics are
Redis bookkeeping done afterwards, best-effort (a ``RedisError`` is logged, never raised), so a Redis
outage can neither lose a sid nor strand a claim. The sid is logged at INFO as soon as it arrives.

Deferrals and retries: a job that was never tried — no slot within the max wait, the global 429 pause (and
the 429 itself: Exotel took nothing), an open circuit, a live claim elsewhere — is put back keeping its
attempt number (``RetryLater(counts_attempt=False)``), so a long bulk backlog never dead-letters a message
for waiting; ``JOB_MAX_AGE_S`` bounds it instead. Real failures (5xx, refused connection) count attempts
and end in the dead letter after ``JOB_MAX_ATTEMPTS``.

Lane mapping: a job from the priority queue, or with ``priority <= WHATSAPP_PRIORITY_THRESHOLD``
(1 = highest … 10), uses the high lane; everything else the bulk lane. Producers pick the queue with
``queue_for_priority``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from redis.exceptions import RedisError

from shared.coordination.circuit import CircuitBreaker
from shared.coordination.ratelimit import Lane, SlotRateLimiter
from shared.errors import Reject, RetryLater
from shared.jobs import Envelope, SendMedia, SendMessage, SendTemplate
from shared.metrics import mark_deduplicated
from shared.settings import Settings
from shared.store import SendOutcome, Store
from shared.whatsapp.exotel import (
    ExotelClient,
    ExotelItemFailed,
    ExotelOutcomeUnknown,
    ExotelRateLimited,
    ExotelRejected,
    ExotelUnavailable,
    OutboundMessage,
    media_content,
    template_content,
    text_content,
)

__all__ = [
    "MessageNotFound",
    "MetricsSink",
    "SendInProgress",
    "SendNeedsReconciliation",
    "WhatsAppServices",
    "handle_send",
    "lane_for",
    "queue_for_priority",
]

log = logging.getLogger(__name__)

#: Pause after a 429 that carried no Retry-After (Exotel documents ``Retry-After: 30``).
DEFAULT_429_PAUSE_S = 30.0
#: Request-level refusals that are about our account or configuration, not the message (404: wrong
#: EXOTEL_SID or API URL): the claim is released and the message left PENDING, so a replay can send it.
_NOT_THE_MESSAGES = (401, 402, 403, 404)
#: When another attempt holds a live claim: look again after this long (it has usually finished by then).
IN_PROGRESS_RETRY_S = 5.0


class MetricsSink(Protocol):
    """What the handler needs of ``shared.metrics.Metrics``."""

    def inc(self, name: str, amount: float = 1, **labels: Any) -> None: ...

    def observe(self, name: str, value: float, **labels: Any) -> None: ...


class _NoMetrics:
    def inc(self, name: str, amount: float = 1, **labels: Any) -> None:  # noqa: ARG002 - a null sink
        return None

    def observe(self, name: str, value: float, **labels: Any) -> None:  # noqa: ARG002 - a null sink
        return None


class MessageNotFound(Reject):
    """No ``communication_messages`` row with the job's ``messageId``."""

    code = "message_missing"


class SendNeedsReconciliation(Reject):
    """The outcome of an earlier attempt is unknown: never re-sent blindly; an operator or reconciler settles
    it (``store.list_sends_needing_reconciliation`` / ``resolve_send``)."""

    code = "needs_reconciliation"


class SendInProgress(RetryLater):
    """Another attempt holds a live claim on this message: a deferral (this delivery tried nothing)."""

    code = "send_in_progress"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s, counts_attempt=False)


@dataclass
class WhatsAppServices:
    """Everything the handler uses, passed in (built once per process by ``Deps.whatsapp``)."""

    store: Store
    exotel: ExotelClient
    limiter: SlotRateLimiter
    circuit: CircuitBreaker
    claim_s: float
    priority_threshold: int
    metrics: MetricsSink = field(default_factory=_NoMetrics)
    sleep: Callable[[float], None] = time.sleep


def lane_for(priority: int | None, *, queue_lane: Lane, threshold: int) -> Lane:
    """The limiter lane: the priority queue, or ``priority <= threshold`` (1 highest), means high."""
    if queue_lane is Lane.HIGH or (priority is not None and priority <= threshold):
        return Lane.HIGH
    return Lane.BULK


def queue_for_priority(priority: int | None, settings: Settings) -> str:
    """The queue a producer should use for a job with this ``priority``."""
    if priority is not None and priority <= settings.whatsapp_priority_threshold:
        return settings.whatsapp_priority_queue_name
    return settings.whatsapp_queue_name


def _content(payload: SendMessage | SendTemplate | SendMedia) -> dict[str, Any]:
    if isinstance(payload, SendMessage):
        return text_content(payload.data.text)
    if isinstance(payload, SendTemplate):
        return template_content(payload.data.template_name, payload.data.language, payload.data.variables)
    return media_content(payload.data.media_url, payload.data.media_type, payload.data.caption)


def handle_send(job: Envelope[Any], services: WhatsAppServices, *, lane: Lane) -> None:
    """Send the job's WhatsApp message at most once and record the outcome on its message row.

    Raises ``RetryLater`` subclasses (rate limit, pause, open circuit, 5xx, claim held elsewhere) and
    ``Reject`` subclasses (missing row, Exotel refusal, needs reconciliation); see the module docstring.
    """
    payload: SendMessage | SendTemplate | SendMedia = job.payload
    message_id = payload.data.message_id
    store, metrics = services.store, services.metrics
    owner = f"{job.id}:{job.attempt}:{uuid.uuid4().hex[:8]}"
    claim = store.claim_send(message_id, owner=owner, claim_s=services.claim_s)
    if claim.outcome is SendOutcome.ALREADY_SENT:
        _quietly("duplicate metric", message_id, metrics.inc, "banxway_whatsapp_duplicate_deliveries_total")
        mark_deduplicated()
        log.info("whatsapp send already done: message_id=%s job_id=%s", message_id, job.id)
        return
    if claim.outcome is SendOutcome.FAILED:
        mark_deduplicated()
        log.info("whatsapp send failed before; not retried: message_id=%s", message_id)
        return
    if claim.outcome is SendOutcome.MISSING:
        raise MessageNotFound(f"no communication_messages row with id {message_id}")
    if claim.outcome is SendOutcome.IN_PROGRESS:
        # A send takes seconds; come back soon (deferrals are free) rather than after the whole claim time.
        raise SendInProgress(f"another attempt is sending message {message_id}",
                             retry_after_s=min(services.claim_s, IN_PROGRESS_RETRY_S))
    if claim.outcome is SendOutcome.NEEDS_RECONCILIATION:
        _quietly("reconciliation metric", message_id, metrics.inc, "banxway_whatsapp_needs_reconciliation_total")
        raise SendNeedsReconciliation(
            f"message {message_id}: an earlier attempt's outcome is unknown ({claim.last_error}); "
            "marked for reconciliation, not re-sent"
        )
    if claim.outcome is not SendOutcome.CLAIMED:
        raise RuntimeError(f"unexpected claim outcome {claim.outcome} for message {message_id}")

    chosen = lane_for(payload.priority, queue_lane=lane, threshold=services.priority_threshold)
    is_probe = False
    try:
        is_probe = services.circuit.before_call()
        waited_s = services.limiter.acquire(chosen, sleep=services.sleep)
    except Exception as exc:
        # Exotel was never called: give the claim back (and the probe slot, if we held it), then propagate.
        if is_probe:
            _quietly("probe release", message_id, services.circuit.release_probe)
        _release_before_call(store, message_id, owner, exc)
        if isinstance(exc, RetryLater):
            _quietly("deferral metric", message_id, metrics.inc, "banxway_whatsapp_send_deferred_total",
                     reason=exc.code, lane=chosen.value)
        raise
    _quietly("wait metric", message_id, metrics.observe, "banxway_ratelimit_wait_seconds", waited_s,
             limiter="exotel", lane=chosen.value)
    outbound = OutboundMessage(to=payload.data.to, content=_content(payload), custom_data=message_id)
    _send(outbound, message_id, owner, services)


def _quietly(what: str, message_id: str, call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Redis bookkeeping (circuit, limiter pause, metrics), best-effort: a ``RedisError`` is logged only."""
    try:
        call(*args, **kwargs)
    except RedisError as exc:
        log.warning("whatsapp %s skipped, Redis unavailable: message_id=%s error=%s: %s", what, message_id,
                    type(exc).__name__, exc)


def _release_before_call(store: Store, message_id: str, owner: str, cause: Exception) -> None:
    """Give the claim back after an error before Exotel was called; never hides ``cause``."""
    reason = cause.reason if isinstance(cause, RetryLater) else f"{type(cause).__name__} before calling Exotel"
    try:
        store.release_send(message_id, owner=owner, error=reason)
    except Exception:
        log.exception("whatsapp claim not released: message_id=%s", message_id)


def _settle(record: Callable[[], object], message_id: str, *bookkeeping: tuple[str, Callable[[], object]]) -> None:
    """Write the store outcome first, then the Redis bookkeeping best-effort (even when the write failed)."""
    try:
        record()
    finally:
        for what, call in bookkeeping:
            _quietly(what, message_id, call)


def _send(outbound: OutboundMessage, message_id: str, owner: str, services: WhatsAppServices) -> None:
    store, circuit, metrics = services.store, services.circuit, services.metrics
    try:
        sid, item = services.exotel.send_one(outbound)
    except ExotelRateLimited as exc:
        # Exotel answered (it is up: also frees a half-open probe) and took nothing.
        pause_s = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_429_PAUSE_S
        _settle(partial(store.release_send, message_id, owner=owner, error=exc.reason), message_id,
                ("429 pause", partial(services.limiter.pause, pause_s)),
                ("circuit success", circuit.record_success),
                ("429 metric", partial(metrics.inc, "banxway_whatsapp_exotel_429_total")))
        raise
    except ExotelUnavailable as exc:
        _settle(partial(store.release_send, message_id, owner=owner, error=exc.reason), message_id,
                ("circuit failure", circuit.record_failure))
        raise
    except ExotelOutcomeUnknown as exc:
        _settle(partial(store.mark_send_unknown, message_id, error=exc.reason), message_id,
                ("circuit failure", circuit.record_failure),
                ("reconciliation metric", partial(metrics.inc, "banxway_whatsapp_needs_reconciliation_total")))
        raise SendNeedsReconciliation(f"message {message_id}: {exc.reason}; marked for reconciliation") from exc
    except ExotelRejected as exc:
        if exc.status in _NOT_THE_MESSAGES:
            _settle(partial(store.release_send, message_id, owner=owner, error=exc.reason), message_id,
                    ("circuit success", circuit.record_success))  # Exotel answered: it is up
        else:
            _settle(partial(store.fail_send, message_id, error=exc.reason), message_id,
                    ("circuit success", circuit.record_success))
        raise
    except ExotelItemFailed as exc:
        _settle(partial(store.fail_send, message_id, error=exc.reason), message_id,
                ("circuit success", circuit.record_success))
        raise
    log.info("whatsapp sent: message_id=%s sid=%s", message_id, sid)
    try:
        _settle(lambda: store.complete_send(message_id, provider_sid=sid, provider_response=dict(item.raw)),
                message_id, ("circuit success", circuit.record_success))
    except Exception:
        # Exotel took it; the claim stays and turns into "needs reconciliation" — never a blind re-send.
        log.exception("whatsapp sent but not recorded: message_id=%s sid=%s", message_id, sid)
        raise
