"""Contract: storing inbound email atomically and exactly once."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from shared.store import InboundEmail
from shared.store.base import RpcStore


def _email(account: str, uid: int, **overrides: Any) -> InboundEmail:
    values: dict[str, Any] = {
        "account_id": account, "mailbox": "INBOX", "uidvalidity": 1, "uid": uid,
        "message_id": f"<m{uid}@example.com>", "from_address": "Alice@Example.com", "from_name": "Alice",
        "subject": "Rate request", "content": "Need a quote", "to_addresses": [{"address": "ops@banxway.test"}],
    }
    values.update(overrides)
    return InboundEmail(**values)


def _counts(db: psycopg.Connection[dict[str, Any]]) -> tuple[int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM customers) c, (SELECT count(*) FROM communication_threads) t,"
        " (SELECT count(*) FROM communication_messages) m"
    ).fetchone()
    assert row is not None
    return row["c"], row["t"], row["m"]


def test_new_email_creates_customer_thread_and_message_once(
    store: RpcStore, make_account: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    user = db.execute("INSERT INTO users (email) VALUES ('agent@banxway.test') RETURNING id").fetchone()
    assert user is not None
    account = make_account(default_tags=["inbound", "email"], auto_assign_to=str(user["id"]))
    sent_at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    result = store.record_email(_email(account, 1, sent_at=sent_at))
    assert result.created
    assert result.status == "stored"
    assert result.new_thread
    thread = db.execute("SELECT * FROM communication_threads WHERE id = %s", [result.thread_id]).fetchone()
    assert thread is not None
    assert re.fullmatch(r"BX-\d{4}-\d{4}", thread["reference"])
    assert thread["tags"] == ["inbound", "email"]
    assert str(thread["assigned_to"]) == str(user["id"])
    assert thread["message_count"] == 1
    assert thread["unread_count"] == 1
    assert str(thread["email_account_id"]) == account
    assert thread["channels"] == ["EMAIL"]
    message = db.execute("SELECT * FROM communication_messages WHERE id = %s", [result.message_row_id]).fetchone()
    assert message is not None
    assert message["external_id"] == "<m1@example.com>"
    assert message["sent_at"] == sent_at
    assert message["direction"] == "INBOUND"
    assert str(message["email_account_id"]) == account
    log = db.execute("SELECT * FROM email_ingest_log").fetchall()
    assert [(r["uid"], r["status"]) for r in log] == [(1, "stored")]

    before = _counts(db)
    other_account = make_account()
    again = store.record_email(_email(other_account, 9, message_id="<m1@example.com>"))
    assert not again.created
    assert again.status == "duplicate"
    assert again.message_row_id == result.message_row_id
    assert _counts(db) == before


def test_concurrent_duplicate_inserts_store_one_row_and_no_orphans(
    store: RpcStore, make_account: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    accounts = [make_account() for _ in range(4)]
    barrier = threading.Barrier(4)
    created: list[bool] = []

    def ingest(account: str) -> None:
        barrier.wait()
        created.append(store.record_email(_email(account, 5, from_address="new.sender@example.com")).created)

    threads = [threading.Thread(target=ingest, args=(a,)) for a in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(created) == [False, False, False, True]
    assert _counts(db) == (1, 1, 1)


def test_sender_matches_case_insensitively_and_replies_thread(
    store: RpcStore, make_account: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    account = make_account()
    first = store.record_email(_email(account, 1))
    reference = db.execute("SELECT reference FROM communication_threads WHERE id = %s",
                           [first.thread_id]).fetchone()
    assert reference is not None
    by_token = store.record_email(_email(account, 2, from_address="alice@example.com",
                                         subject=f"Re: [{reference['reference']}] Rate request"))
    by_reply = store.record_email(_email(account, 3, in_reply_to="<m1@example.com>"))
    by_refs = store.record_email(_email(account, 4, references=["<unknown@x>", "<m2@example.com>"]))
    other = store.record_email(_email(account, 5, from_address="bob@example.com",
                                      subject=f"Fwd: {reference['reference']}"))
    assert {by_token.thread_id, by_reply.thread_id, by_refs.thread_id} == {first.thread_id}
    assert by_token.customer_id == first.customer_id
    assert other.thread_id != first.thread_id  # another customer's token does not leak mail into the thread
    count = db.execute("SELECT message_count FROM communication_threads WHERE id = %s", [first.thread_id]).fetchone()
    assert count is not None
    assert count["message_count"] == 4


def test_long_values_are_truncated_nul_stripped_and_text_round_trips_exactly(
    store: RpcStore, make_account: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    account = make_account()
    subject = "件名" * 600
    body = "Grüße aus München — 東京\x00 🚢 ok"
    result = store.record_email(_email(
        account, 1, subject=subject, content=body, from_name="N" * 300, html_content="<p>\x00x</p>",
        to_addresses=[], cc_addresses=[{"address": "c@x.com", "name": "Zoë\x00"}],
        attachments=[{"filename": "a.pdf", "size": 3}], message_id="<" + "i" * 300 + ">",
    ))
    row = db.execute("SELECT * FROM communication_messages WHERE id = %s", [result.message_row_id]).fetchone()
    assert row is not None
    assert row["subject"] == subject[:500]
    assert len(row["from_name"]) == 255
    assert len(row["external_id"]) == 255
    assert row["content"] == "Grüße aus München — 東京 🚢 ok"
    assert row["html_content"] == "<p>x</p>"
    assert row["cc_addresses"] == [{"address": "c@x.com", "name": "Zoë"}]
    types = db.execute(
        "SELECT jsonb_typeof(to_addresses) t, jsonb_typeof(cc_addresses) c, jsonb_typeof(attachments) a"
        " FROM communication_messages WHERE id = %s", [result.message_row_id]).fetchone()
    assert types == {"t": "array", "c": "array", "a": "array"}


def test_failures_are_recorded_with_their_try_count(
    store: RpcStore, make_account: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    account = make_account()
    kwargs: dict[str, Any] = {"account_id": account, "mailbox": "INBOX", "uidvalidity": 1, "uid": 7}
    assert store.record_email_failure(**kwargs, reason="bad MIME", skipped=False).attempts == 1
    second = store.record_email_failure(**kwargs, reason="bad MIME\x00 again", skipped=False)
    assert (second.status, second.attempts) == ("failed", 2)
    skipped = store.record_email_failure(**kwargs, reason="too many tries", skipped=True)
    assert (skipped.status, skipped.attempts) == ("skipped", 3)
    row = db.execute("SELECT last_error FROM email_ingest_log WHERE uid = 7").fetchone()
    assert row == {"last_error": "too many tries"}
