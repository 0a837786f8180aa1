"""The WhatsApp send handler: exactly-once effect on an at-least-once queue, rate-limited, circuit-broken.

Flow for one job (``SEND_MESSAGE`` / ``SEND_TEMPLATE`` / ``SEND_MEDIA``; the payload is validated by
``shared.jobs`` before we get here: phone numbers, text length, unknown actions):

1. claim the send in ``outbound_dispatch`` (``store.claim_send``) *before* calling Exotel:
   already sent → acknowledge without calling Exotel; a live claim elsewhere → retry later; a stale claim
   left by a crashed attempt → marked for reconciliation and dead-lettered with that reason (never
   re-sent blindly); no message row → reject;
2. ask the shared circuit breaker, then book a slot in the shared rate limiter (lane from the queue and
   the job's ``priority``) and wait for it; either refusing → release the claim, retry later;
3. call Exotel with ``custom_data`` = our message id:
   success → ``complete_send`` (SENT, external_id = sid, sent_at, error fields cleared);
   429 → pause every sender for Retry-After, release, retry later;
   5xx / refused connection → count a circuit failure, release, retry later (dead letter after the
   configured attempts, with the reason);
   timeout after sending → ``mark_send_unknown`` and dead-letter for reconciliation;
   item failure / 400 / 404 → ``fail_send`` (FAILED, error_message, failed_at) and reject;
   401 / 402 / 403 (account problems, not the message's) → release and reject, so the dead letter can be
   replayed once the account is fixed.

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
from typing import Any, Protocol

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
_ACCOUNT_PROBLEMS = (401, 402, 403)
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
        metrics.inc("banxway_whatsapp_duplicate_deliveries_total")
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
        metrics.inc("banxway_whatsapp_needs_reconciliation_total")
        raise SendNeedsReconciliation(
            f"message {message_id}: an earlier attempt's outcome is unknown ({claim.last_error}); "
            "marked for reconciliation, not re-sent"
        )
    if claim.outcome is not SendOutcome.CLAIMED:
        raise RuntimeError(f"unexpected claim outcome {claim.outcome} for message {message_id}")

    chosen = lane_for(payload.priority, queue_lane=lane, threshold=services.priority_threshold)
    try:
        services.circuit.before_call()
        waited_s = services.limiter.acquire(chosen, sleep=services.sleep)
    except RetryLater as exc:
        store.release_send(message_id, owner=owner, error=exc.reason)
        metrics.inc("banxway_whatsapp_send_deferred_total", reason=exc.code, lane=chosen.value)
        raise
    metrics.observe("banxway_ratelimit_wait_seconds", waited_s, limiter="exotel", lane=chosen.value)
    outbound = OutboundMessage(to=payload.data.to, content=_content(payload), custom_data=message_id)
    _send(outbound, message_id, owner, services)


def _send(outbound: OutboundMessage, message_id: str, owner: str, services: WhatsAppServices) -> None:
    store, circuit = services.store, services.circuit
    try:
        sid, item = services.exotel.send_one(outbound)
    except ExotelRateLimited as exc:
        services.limiter.pause(exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_429_PAUSE_S)
        store.release_send(message_id, owner=owner, error=exc.reason)
        services.metrics.inc("banxway_whatsapp_exotel_429_total")
        raise
    except ExotelUnavailable as exc:
        circuit.record_failure()
        store.release_send(message_id, owner=owner, error=exc.reason)
        raise
    except ExotelOutcomeUnknown as exc:
        circuit.record_failure()
        store.mark_send_unknown(message_id, error=exc.reason)
        services.metrics.inc("banxway_whatsapp_needs_reconciliation_total")
        raise SendNeedsReconciliation(f"message {message_id}: {exc.reason}; marked for reconciliation") from exc
    except ExotelRejected as exc:
        circuit.record_success()  # Exotel answered: it is up
        if exc.status in _ACCOUNT_PROBLEMS:
            store.release_send(message_id, owner=owner, error=exc.reason)
        else:
            store.fail_send(message_id, error=exc.reason)
        raise
    except ExotelItemFailed as exc:
        circuit.record_success()
        store.fail_send(message_id, error=exc.reason)
        raise
    circuit.record_success()
    try:
        store.complete_send(message_id, provider_sid=sid, provider_response=dict(item.raw))
    except Exception:
        # Exotel took it; the claim stays and turns into "needs reconciliation" — never a blind re-send.
        log.exception("whatsapp sent but not recorded: message_id=%s sid=%s", message_id, sid)
        raise
    log.info("whatsapp sent: message_id=%s sid=%s", message_id, sid)
