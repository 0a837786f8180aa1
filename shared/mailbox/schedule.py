"""Timer fan-out: one ``POLL_INBOX`` job per active, IMAP-enabled account that is due and not being polled.

Due: never polled, or ``last_polled_at + interval <= now + slack`` with the account's ``poll_interval_ms``
(else ``EMAIL_POLL_INTERVAL``). The slack (a tenth of the interval, at most 5 s) keeps a 30 s interval on a
30 s timer from slipping to every other tick, since ``last_polled_at`` is written when a poll ends.

Not being polled: the mailbox lease is not live, and no job for it is already queued — a Redis key
(``EMAIL_POLL_PENDING_PREFIX:<account>``, set NX with a TTL of the lease time) that the poll handler deletes
once it holds the lease. Redis may lose it: then at worst a second job finds the lease held and does nothing.
A ``POLL_ALL_INBOXES`` job ("poll now") ignores the interval but still skips busy accounts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from shared.coordination.keys import EMAIL_POLL_PENDING_PREFIX
from shared.jobs import PollInbox

if TYPE_CHECKING:
    from redis import Redis

    from shared.queues import QueueOps
    from shared.store import PollableAccount, Store

__all__ = ["ScheduleReport", "clear_pending", "is_due", "pending_key", "schedule_polls"]

log = logging.getLogger(__name__)

_MAX_SLACK_S = 5.0


@dataclass
class ScheduleReport:
    """Which accounts got a job and why the others did not."""

    enqueued: list[str] = field(default_factory=list)
    not_due: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)


def pending_key(account_id: str) -> str:
    """The Redis key marking a queued poll of ``account_id``."""
    return f"{EMAIL_POLL_PENDING_PREFIX}:{account_id}"


def is_due(account: PollableAccount, *, now: datetime, default_interval_ms: int) -> bool:
    """Whether ``account`` should be polled at ``now`` (see the module docstring for the slack)."""
    if account.last_polled_at is None:
        return True
    interval_s = (account.poll_interval_ms or default_interval_ms) / 1000
    slack_s = min(_MAX_SLACK_S, interval_s / 10)
    return account.last_polled_at + timedelta(seconds=interval_s) <= now + timedelta(seconds=slack_s)


def _claim_pending(redis: Redis | None, account_id: str, ttl_s: int) -> bool:
    if redis is None:
        return True
    try:
        return bool(redis.set(pending_key(account_id), b"1", nx=True, ex=max(1, ttl_s)))
    except RedisError as exc:
        log.warning("poll dedupe unavailable, enqueuing anyway: account_id=%s error=%s", account_id,
                    type(exc).__name__)
        return True


def clear_pending(redis: Redis | None, account_id: str) -> None:
    """Forget the queued-poll mark of ``account_id`` (the poll handler calls this once it holds the lease)."""
    if redis is None:
        return
    try:
        redis.delete(pending_key(account_id))
    except RedisError as exc:
        log.warning("poll dedupe key not cleared: account_id=%s error=%s", account_id, type(exc).__name__)


def schedule_polls(
    *,
    store: Store,
    queues: QueueOps,
    queue_name: str,
    redis: Redis | None,
    default_interval_ms: int,
    pending_ttl_s: int,
    force: bool = False,
    now: datetime | None = None,
) -> ScheduleReport:
    """Enqueue a ``POLL_INBOX`` job for each due, idle account; ``force`` ignores the interval."""
    now = now or datetime.now(UTC)
    report = ScheduleReport()
    for account in store.list_pollable_accounts():
        if account.leased:
            report.busy.append(account.id)
            continue
        if not force and not is_due(account, now=now, default_interval_ms=default_interval_ms):
            report.not_due.append(account.id)
            continue
        if not _claim_pending(redis, account.id, pending_ttl_s):
            report.busy.append(account.id)
            continue
        job = PollInbox.model_validate({"action": "POLL_INBOX", "data": {"accountId": account.id}})
        try:
            queues.enqueue(queue_name, "email", job)
        except BaseException:
            clear_pending(redis, account.id)
            raise
        report.enqueued.append(account.id)
    log.info("email polls scheduled: enqueued=%d not_due=%d busy=%d",
             len(report.enqueued), len(report.not_due), len(report.busy))
    return report
