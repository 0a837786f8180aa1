"""Email poller end to end: the timer fans out, the queue trigger polls Dovecot, messages land once in the
database and attachments in Azurite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from azure.storage.blob import BlobServiceClient

from scripts.seed_demo import demo_emails
from tests.e2e.conftest import AppHost, Db, wait_for
from tests.support.services import ImapAccount, ImapService


def _messages(db: Db) -> list[dict]:
    return db.execute(
        "SELECT external_id, thread_id, subject, content, attachments FROM communication_messages"
        " WHERE channel = 'EMAIL' ORDER BY external_id"
    ).fetchall()


def _last_polled(db: Db, account_id: str) -> datetime | None:
    row = db.execute("SELECT last_polled_at, last_poll_status FROM email_accounts WHERE id = %s",
                     [account_id]).fetchone()
    assert row is not None
    return row["last_polled_at"] if row["last_poll_status"] == "SUCCESS" else None


def test_timer_polls_the_inbox_and_each_email_is_stored_once_with_attachments_in_blob_storage(
    app_host: Callable[..., AppHost], imap_service: ImapService, imap_account: ImapAccount,
    make_email_account: Callable[..., str], db: Db, blob_service: BlobServiceClient,
) -> None:
    for raw in demo_emails():
        imap_service.append(raw, user=imap_account.user)
    # A 1 s interval on a 1 s timer: the inbox is polled again and again while the test watches.
    account_id = make_email_account(imap_account.user, imap_account.password, poll_interval_ms=1000)
    host = app_host(["email_schedule_polls", "email_poll_inbox"], EMAIL_POLL_SCHEDULE="* * * * * *")

    wait_for("4 stored emails", lambda: len(_messages(db)) == 4)
    first_poll = wait_for("a successful poll", lambda: _last_polled(db, account_id))
    # Two more complete polls of the same mailbox store nothing new.
    later = wait_for("a second poll", lambda: (t := _last_polled(db, account_id)) and t > first_poll and t)
    wait_for("a third poll", lambda: (t := _last_polled(db, account_id)) and t > later)

    stored = {row["external_id"]: row for row in _messages(db)}
    assert len(stored) == 4
    request = stored["<demo-rate-request@acme-freight.example>"]
    reply = stored["<demo-rate-request-reply@acme-freight.example>"]
    assert reply["thread_id"] == request["thread_id"]
    assert stored["<demo-muenchen@spedition.example>"]["subject"] == "Lieferung nach München \u2013 Zollpapiere \u2713"
    assert "Grüß Gott" in stored["<demo-muenchen@spedition.example>"]["content"]
    (attachment,) = stored["<demo-packing-list@acme-freight.example>"]["attachments"]
    assert attachment["filename"] == "packing-list-4711.csv"
    blob = blob_service.get_blob_client(host.settings["EMAIL_ATTACHMENTS_CONTAINER"], attachment["blob_name"])
    assert blob.download_blob().readall().startswith(b"carton,description,weight_kg\n")
    # Nothing left behind on the queues: every poll job completed.
    assert host.queue_depth(host.queue("EMAIL_QUEUE_NAME") + "-poison") == 0
