"""The small "message created" event the main API relays to the UI (Redis pub/sub, EMAIL_EVENTS_CHANNEL).

Redis is for coordination only: a failed publish is logged and never fails the poll (the row is the record).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis import Redis

    from shared.store import IngestResult

__all__ = ["EVENT_TYPE", "message_created_event", "publish_message_created"]

log = logging.getLogger(__name__)

EVENT_TYPE = "message.created"


def message_created_event(result: IngestResult, *, account_id: str) -> dict[str, object]:
    """The event body: ids only (no content, no addresses), so subscribers fetch what they may see."""
    return {
        "type": EVENT_TYPE,
        "channel": "EMAIL",
        "messageId": result.message_row_id,
        "threadId": result.thread_id,
        "accountId": account_id,
        "customerId": result.customer_id,
        "newThread": result.new_thread,
    }


def publish_message_created(redis: Redis, channel: str, result: IngestResult, *, account_id: str) -> bool:
    """Publish the event; returns False (and logs) when Redis fails."""
    body = json.dumps(message_created_event(result, account_id=account_id), separators=(",", ":"))
    try:
        redis.publish(channel, body)
    except RedisError as exc:
        log.warning("message.created event not published: message_id=%s error=%s",
                    result.message_row_id, type(exc).__name__)
        return False
    return True
