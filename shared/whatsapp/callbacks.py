"""Exotel delivery reports (DLR callbacks) → monotonic message status updates.

Exotel POSTs ``{"whatsapp": {"messages": [{"callback_type": "dlr", "sid", "exo_detailed_status",
"description", "timestamp", "custom_data"}]}}`` to the ``status_callback`` we sent. We key on
``exo_detailed_status`` (the numeric codes differ between Exotel's doc versions):
``EX_MESSAGE_SENT`` → SENT, ``EX_MESSAGE_DELIVERED`` → DELIVERED, ``EX_MESSAGE_SEEN`` → READ, any other
``EX_*`` → FAILED with the status and description as the reason. The store applies them monotonically
(SENT < DELIVERED < READ), so callbacks arriving out of order never move a status backwards. A callback
whose sid is not recorded yet (Exotel can call back before ``complete_send`` committed) is applied by our
message id, which Exotel echoes in ``custom_data``; ``complete_send`` then keeps what it recorded.

The callback URL carries a secret path segment (``<EXOTEL_STATUS_CALLBACK_URL>/<EXOTEL_CALLBACK_SECRET>``),
compared in constant time. Answers are quick: 401 for a wrong secret, 400 for a body we cannot read (recorded
for operators in a capped Redis list, ``INVALID_CALLBACKS_KEY``, with a counter), 503 when the database is
unavailable (Exotel retries), otherwise 200 — also for unknown sids and inbound-message callbacks, which
this worker does not handle.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.coordination.keys import ROOT
from shared.store import DeliveryStatus, Store, StoreUnavailable

if TYPE_CHECKING:
    from redis import Redis

    from shared.whatsapp.handler import MetricsSink

__all__ = ["INVALID_CALLBACKS_KEY", "CallbackAnswer", "delivery_status_for", "handle_status_callback"]

log = logging.getLogger(__name__)

#: Capped list of the latest invalid callback bodies (newest first), for operators.
INVALID_CALLBACKS_KEY = f"{ROOT}:whatsapp:invalid-callbacks"
_INVALID_KEEP = 200
_INVALID_BODY_CHARS = 4000
_MAX_ITEMS = 1000

_STATUS = {
    "EX_MESSAGE_SENT": DeliveryStatus.SENT,
    "EX_MESSAGE_DELIVERED": DeliveryStatus.DELIVERED,
    "EX_MESSAGE_SEEN": DeliveryStatus.READ,
}


@dataclass(frozen=True)
class CallbackAnswer:
    """The HTTP answer: status code and a small JSON body."""

    status_code: int
    body: dict[str, Any]

    def json(self) -> str:
        """The body as JSON text."""
        return json.dumps(self.body)


class _InvalidCallback(ValueError):
    pass


def delivery_status_for(detailed_status: str) -> DeliveryStatus | None:
    """Map ``exo_detailed_status`` to our status; None when it is not an ``EX_*`` status at all."""
    if detailed_status in _STATUS:
        return _STATUS[detailed_status]
    return DeliveryStatus.FAILED if detailed_status.startswith("EX_") else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _our_message_id(custom_data: Any) -> str | None:
    """Our message id from ``custom_data`` (the handler sends the row's UUID); None for anything else."""
    if not isinstance(custom_data, str):
        return None
    try:
        return str(uuid.UUID(custom_data))
    except ValueError:
        return None


def _items(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _InvalidCallback("body is not JSON") from exc
    # Types first: any JSON value may arrive ({"whatsapp": []}, a bare list ...), and each is a 400.
    whatsapp = data.get("whatsapp") if isinstance(data, dict) else None
    if not isinstance(whatsapp, dict):
        raise _InvalidCallback("whatsapp object missing")
    messages = whatsapp.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= _MAX_ITEMS:
        raise _InvalidCallback(f"whatsapp.messages must be a list of 1-{_MAX_ITEMS} items")
    for index, item in enumerate(messages):
        if not isinstance(item, dict):
            raise _InvalidCallback(f"whatsapp.messages[{index}] is not an object")
        if item.get("callback_type") == "dlr":
            if not isinstance(item.get("sid"), str) or not item["sid"]:
                raise _InvalidCallback(f"whatsapp.messages[{index}].sid missing")
            status = item.get("exo_detailed_status")
            if not isinstance(status, str) or delivery_status_for(status) is None:
                raise _InvalidCallback(f"whatsapp.messages[{index}].exo_detailed_status missing or unknown")
    return messages


def handle_status_callback(
    body: bytes,
    *,
    given_secret: str,
    expected_secret: str | None,
    store: Store,
    redis: Redis | None = None,
    metrics: MetricsSink | None = None,
) -> CallbackAnswer:
    """Apply one DLR callback request; never raises for bad input (answers 400/401 instead)."""
    if not expected_secret or not hmac.compare_digest(given_secret.encode(), expected_secret.encode()):
        log.warning("whatsapp status callback with a wrong secret refused")
        return CallbackAnswer(401, {"error": "unauthorized"})
    try:
        items = _items(body)
    except _InvalidCallback as exc:
        _record_invalid(body, str(exc), redis, metrics)
        return CallbackAnswer(400, {"error": f"invalid callback: {exc}"})
    counts = {"applied": 0, "stale": 0, "not_found": 0, "ignored": 0}
    try:
        for item in items:
            if item.get("callback_type") != "dlr":
                counts["ignored"] += 1  # inbound messages are not this worker's job
                continue
            detailed = item["exo_detailed_status"]
            status = delivery_status_for(detailed)
            assert status is not None
            reason = None
            if status is DeliveryStatus.FAILED:
                reason = f"{detailed}: {item.get('description') or ''}".strip().rstrip(":")
            at = _timestamp(item.get("timestamp"))
            update = store.apply_delivery_status(item["sid"], status, reason=reason, at=at)
            message_id = _our_message_id(item.get("custom_data"))
            if update.outcome == "not_found" and message_id is not None:
                # Exotel called back before complete_send recorded the sid: match by our id in custom_data.
                update = store.apply_delivery_status_for_message(
                    message_id, status, provider_sid=item["sid"], reason=reason, at=at)
            counts[update.outcome if update.outcome in counts else "ignored"] += 1
            if metrics is not None:
                metrics.inc("banxway_whatsapp_callbacks_total", outcome=update.outcome, status=status.value)
    except StoreUnavailable as exc:
        log.warning("whatsapp status callback not applied, database unavailable: %s", exc.reason)
        return CallbackAnswer(503, {"error": "temporarily unavailable"})
    return CallbackAnswer(200, {"ok": True, **counts})


def _record_invalid(body: bytes, problem: str, redis: Redis | None, metrics: MetricsSink | None) -> None:
    log.warning("invalid whatsapp status callback: %s", problem)
    if metrics is not None:
        metrics.inc("banxway_whatsapp_invalid_callbacks_total")
    if redis is None:
        return
    record = json.dumps({
        "at": datetime.now(UTC).isoformat(),
        "problem": problem,
        "body": body[:_INVALID_BODY_CHARS].decode("utf-8", errors="replace"),
    })
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.lpush(INVALID_CALLBACKS_KEY, record)
        pipe.ltrim(INVALID_CALLBACKS_KEY, 0, _INVALID_KEEP - 1)
        pipe.execute()
    except Exception:  # recording must never change the answer
        log.exception("could not record an invalid whatsapp status callback")
