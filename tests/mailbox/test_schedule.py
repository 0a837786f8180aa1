"""Timer fan-out and the queue handler through the real job boundary (Azurite queues, Postgres, Dovecot)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis
from azure.storage.queue import QueueServiceClient

from shared.deps import Deps
from shared.jobs import parse_job
from shared.mailbox.handlers import handle_email_job, handle_schedule_polls
from shared.mailbox.schedule import is_due, pending_key, schedule_polls
from shared.outcomes import Outcome
from shared.queues import QueueOps
from shared.settings import Settings
from shared.store import PollableAccount
from shared.store.postgres import PostgresStore
from tests.mailbox.conftest import KEY
from tests.mailbox.messages import simple_message
from tests.support.services import ImapAccount, ImapService

Db = psycopg.Connection[dict[str, Any]]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _pollable(last_polled_at: datetime | None, interval_ms: int | None) -> PollableAccount:
    return PollableAccount("a", "n", "e", interval_ms, last_polled_at, None, None, leased=False)


def test_an_account_is_due_after_its_own_interval_or_the_default() -> None:
    assert is_due(_pollable(None, 60_000), now=NOW, default_interval_ms=30_000)
    assert not is_due(_pollable(NOW - timedelta(seconds=40), 60_000), now=NOW, default_interval_ms=30_000)
    assert is_due(_pollable(NOW - timedelta(seconds=60), 60_000), now=NOW, default_interval_ms=30_000)
    assert is_due(_pollable(NOW - timedelta(seconds=30), None), now=NOW, default_interval_ms=30_000)
    assert not is_due(_pollable(NOW - timedelta(seconds=20), None), now=NOW, default_interval_ms=30_000)


def test_a_30s_interval_on_a_30s_timer_does_not_slip_to_every_other_tick() -> None:
    # The poll ended 2 s after the previous tick, so only 28 s have passed at this one.
    assert is_due(_pollable(NOW - timedelta(seconds=28), 30_000), now=NOW, default_interval_ms=30_000)


def _queued(service: QueueServiceClient, queue: str) -> list[dict[str, Any]]:
    ops = QueueOps(service, encoding="base64")
    messages = ops.client(queue).receive_messages(max_messages=32, visibility_timeout=1)
    return [json.loads(m.content) for m in messages]


def test_fan_out_enqueues_each_due_idle_account_once(
    pg_store: PostgresStore, imap_account: ImapAccount, make_email_account: Callable[..., str], db: Db,
    queue_service: QueueServiceClient, unique_queue_name: Callable[..., str], redis_client: redis.Redis,
) -> None:
    queue = unique_queue_name("email")
    due = make_email_account(imap_account)
    recent = make_email_account(imap_account, poll_interval_ms=600_000)
    busy = make_email_account(imap_account)
    make_email_account(imap_account, active=False)
    db.execute("UPDATE email_accounts SET last_polled_at = now() WHERE id = %s", [recent])
    assert pg_store.claim_mailbox(busy, "INBOX", owner="someone", lease_s=60).won
    ops = QueueOps(queue_service, encoding="base64")

    def tick(**kwargs: Any) -> Any:
        return schedule_polls(store=pg_store, queues=ops, queue_name=queue, redis=redis_client,
                              default_interval_ms=30_000, pending_ttl_s=300, **kwargs)

    report = tick()
    assert (report.enqueued, report.not_due, report.busy) == ([due], [recent], [busy])
    assert tick().enqueued == []  # the first job is still queued: no second one
    assert tick(force=True).enqueued == [recent]  # "poll now" ignores the interval, not the busy marks
    jobs = [parse_job("email", json.dumps(body)) for body in _queued(queue_service, queue)]
    assert sorted(job.payload.data.account_id for job in jobs) == sorted([due, recent])
    assert redis_client.exists(pending_key(due))


def _deps(database_url: str, redis_url: str, storage: str, queue: str, *, imap_service: ImapService,
          container: str) -> Deps:
    settings = Settings.from_env({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "AzureWebJobsStorage": storage,
        "EMAIL_QUEUE_NAME": queue, "EMAIL_ENCRYPTION_KEY": KEY, "IMAP_CA_FILE": imap_service.ca_file or "",
        "IMAP_TIMEOUT_S": "5", "EMAIL_ATTACHMENTS_CONTAINER": container,
    })
    return Deps(settings, message_encoding="base64")


class _Msg:
    def __init__(self, body: bytes, msg_id: str) -> None:
        self._body, self.id = body, msg_id

    def get_body(self) -> bytes:
        return self._body


def test_poll_now_fans_out_and_the_queued_job_polls_the_inbox_through_the_boundary(
    database_url: str, redis_url: str, storage_connection_string: str, imap_service: ImapService,
    imap_account: ImapAccount, make_email_account: Callable[..., str], db: Db,
    queue_service: QueueServiceClient, unique_queue_name: Callable[..., str], redis_client: redis.Redis,
    attachments_container: str,
) -> None:
    queue = unique_queue_name("email")
    account = make_email_account(imap_account)
    imap_service.append(simple_message(subject="via the queue"), user=imap_account.user)
    deps = _deps(database_url, redis_url, storage_connection_string, queue, imap_service=imap_service,
                 container=attachments_container)
    try:
        poll_all = parse_job("email", json.dumps({"action": "POLL_ALL_INBOXES"}))
        handle_email_job(poll_all, deps)
        assert handle_schedule_polls(deps).enqueued == []  # already queued
        client = deps.queues.client(queue)
        [message] = list(client.receive_messages(max_messages=5, visibility_timeout=30))
        result = deps.run_message(_Msg(message.content, message.id), kind="email", queue=queue,
                                  handler=lambda job: handle_email_job(job, deps))
        assert result.outcome is Outcome.COMPLETED
        rows = db.execute("SELECT subject FROM communication_messages").fetchall()
        assert [r["subject"] for r in rows] == ["via the queue"]
        assert not redis_client.exists(pending_key(account))
        assert db.execute("SELECT last_poll_status FROM email_accounts WHERE id = %s",
                          [account]).fetchone() == {"last_poll_status": "SUCCESS"}
    finally:
        deps.store.close()
