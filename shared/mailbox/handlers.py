"""Handlers of the email poller's triggers: the timer fan-out and the ``email-processing`` queue.

``POLL_INBOX`` polls one inbox (``MailboxPoller``); ``POLL_ALL_INBOXES`` fans out like the timer but ignores
the poll interval ("poll now"). A poll that failed on the IMAP side (wrong password, unreachable server)
completes the job: the account is marked FAILED and the next timer tick polls it again, so failures never
pile up retries on the queue. Transient store errors raise ``RetryLater`` (the boundary retries the job).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from shared.jobs import Envelope, PollAllInboxes, PollInbox
from shared.mailbox.attachments import AttachmentStore
from shared.mailbox.imap import ImapConnector, plaintext_hosts
from shared.mailbox.poller import MailboxPoller, PollConfig, PollReport
from shared.mailbox.schedule import ScheduleReport, clear_pending, schedule_polls
from shared.metrics import EMAIL_LAST_POLL_SUCCESS

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from redis import Redis

    from shared.metrics import Metrics
    from shared.queues import QueueOps
    from shared.settings import Settings
    from shared.store import Store

__all__ = ["MailboxDeps", "handle_email_job", "handle_schedule_polls", "poll_inbox"]

log = logging.getLogger(__name__)


class MailboxDeps(Protocol):
    """What the email handlers use of ``shared.deps.Deps``."""

    @property
    def settings(self) -> Settings: ...
    @property
    def store(self) -> Store: ...
    @property
    def redis(self) -> Redis: ...
    @property
    def queues(self) -> QueueOps: ...
    @property
    def blob_service(self) -> BlobServiceClient: ...
    @property
    def metrics(self) -> Metrics: ...


def _schedule(deps: MailboxDeps, *, force: bool) -> ScheduleReport:
    s = deps.settings
    return schedule_polls(
        store=deps.store, queues=deps.queues, queue_name=s.email_queue_name, redis=deps.redis,
        default_interval_ms=s.email_poll_interval_ms, pending_ttl_s=s.email_lease_ttl_s, force=force,
    )


def handle_schedule_polls(deps: MailboxDeps) -> ScheduleReport:
    """The timer: enqueue one POLL_INBOX per due, idle account."""
    return _schedule(deps, force=False)


def poll_inbox(account_id: str, deps: MailboxDeps) -> PollReport:
    """Poll one inbox with clients from ``deps`` and record the figures."""
    s = deps.settings
    poller = MailboxPoller(
        store=deps.store,
        connector=ImapConnector(ca_file=s.imap_ca_file, timeout_s=s.imap_timeout_s,
                                connect_timeout_s=min(10.0, s.imap_timeout_s),
                                allow_plaintext_hosts=plaintext_hosts(s.imap_allow_plaintext_hosts)),
        attachments=AttachmentStore(deps.blob_service, s.email_attachments_container),
        config=PollConfig.from_settings(s),
        redis=deps.redis,
    )
    report = poller.poll(account_id)
    if report.outcome != "held":
        clear_pending(deps.redis, account_id)
    _record_metrics(deps, report)
    log.info(
        "mailbox polled: account_id=%s outcome=%s sync=%s stored=%d duplicates=%d skipped=%d failed=%d",
        account_id, report.outcome, report.sync, report.stored, report.duplicates, report.skipped, report.failed,
    )
    return report


def _record_metrics(deps: MailboxDeps, report: PollReport) -> None:
    try:
        metrics = deps.metrics
        metrics.inc("banxway_email_polls_total", outcome=report.outcome)
        # The poll lag gauge (shared.ops.gauges) is computed from this when read, so it grows while polls stop.
        if report.outcome in ("polled", "idle"):
            metrics.set_gauge(EMAIL_LAST_POLL_SUCCESS, time.time(), account_id=report.account_id)
        elif report.outcome in ("missing", "disabled"):
            metrics.remove_gauge(EMAIL_LAST_POLL_SUCCESS, account_id=report.account_id)
        for status in ("stored", "duplicates", "skipped", "failed"):
            count = getattr(report, status)
            if count:
                metrics.inc("banxway_email_messages_total", count, status=status)
    except Exception:  # metrics must never change a poll's outcome
        log.warning("email poll metrics not recorded", exc_info=True)


def handle_email_job(job: Envelope[Any], deps: MailboxDeps) -> None:
    """Run one ``email-processing`` job (POLL_INBOX or POLL_ALL_INBOXES)."""
    payload = job.payload
    if isinstance(payload, PollInbox):
        poll_inbox(payload.data.account_id, deps)
    elif isinstance(payload, PollAllInboxes):
        _schedule(deps, force=True)
    else:  # parse_job only yields the two; keep mypy and readers honest
        raise TypeError(f"unexpected email job payload {type(payload).__name__}")
