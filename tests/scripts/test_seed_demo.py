"""scripts/seed_demo.py: the demo rows and mailbox a local run starts with, created once however often it runs."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from scripts.seed_demo import Mailbox, commands, demo_emails, seed
from shared.jobs import parse_job
from tests.support.services import ImapAccount, ImapService

KEY = "seed-test-key"

Db = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def db(database_url: str) -> Iterator[Db]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def _mailbox(imap_service: ImapService, account: ImapAccount) -> Mailbox:
    return Mailbox(host=imap_service.host, imaps_port=imap_service.imaps_port, user=account.user,
                   password=account.password, ca_file=imap_service.ca_file, dovecot_conf=imap_service.dovecot_conf)


def _counts(db: Db) -> dict[str, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM email_accounts) AS accounts, (SELECT count(*) FROM customers) AS customers,"
        " (SELECT count(*) FROM communication_threads) AS threads,"
        " (SELECT count(*) FROM communication_messages WHERE channel = 'WHATSAPP') AS whatsapp,"
        " (SELECT count(*) FROM communication_messages WHERE channel = 'VOICE') AS voice"
    ).fetchone()
    assert row is not None
    return {key: int(value) for key, value in row.items()}


def test_seeding_twice_creates_everything_once_and_appends_the_emails_once(
    database_url: str, db: Db, imap_service: ImapService, imap_account: ImapAccount,
) -> None:
    mailbox = _mailbox(imap_service, imap_account)
    first = seed(database_url, mailbox, key=KEY, recordings_url="http://127.0.0.1:1", exotel_sid="sid")
    second = seed(database_url, mailbox, key=KEY, recordings_url="http://127.0.0.1:1", exotel_sid="sid")

    assert first.emails_appended == 4
    assert second.emails_appended == 0
    assert imap_service.mailbox_status(user=imap_account.user)["messages"] == 4
    assert second == first.__class__(**{**first.__dict__, "emails_appended": 0})
    assert _counts(db) == {"accounts": 1, "customers": 1, "threads": 1, "whatsapp": 1, "voice": 1}
    account = db.execute("SELECT decrypt_email_password(imap_pass_encrypted, %s) AS pw, imap_port, imap_tls"
                         " FROM email_accounts WHERE id = %s", [KEY, first.account_id]).fetchone()
    assert account == {"pw": imap_account.password, "imap_port": imap_service.imaps_port, "imap_tls": True}
    voice = db.execute("SELECT * FROM communication_messages WHERE id = %s", [first.voice_message_id]).fetchone()
    assert voice is not None
    assert (voice["transcription_status"], voice["external_id"]) == ("PENDING", first.call_sid)
    assert voice["metadata"]["recordingUrl"] == first.recording_url
    assert first.recording_url.startswith("http://127.0.0.1:1/exotelrecordings/sid/")


def test_used_demo_messages_are_replaced_on_the_next_run(
    database_url: str, db: Db, imap_service: ImapService, imap_account: ImapAccount,
) -> None:
    mailbox = _mailbox(imap_service, imap_account)
    first = seed(database_url, mailbox, key=KEY)
    db.execute("UPDATE communication_messages SET status = 'SENT' WHERE id = %s", [first.whatsapp_message_id])
    db.execute("UPDATE communication_messages SET transcription_status = 'COMPLETED' WHERE id = %s",
               [first.voice_message_id])

    again = seed(database_url, mailbox, key="a-new-key")

    assert again.whatsapp_message_id != first.whatsapp_message_id
    assert again.voice_message_id != first.voice_message_id
    assert again.call_sid != first.call_sid
    assert again.account_id == first.account_id
    # The account's password follows the key of the latest run.
    row = db.execute("SELECT decrypt_email_password(imap_pass_encrypted, 'a-new-key') AS pw FROM email_accounts"
                     ).fetchone()
    assert row == {"pw": imap_account.password}


def test_printed_commands_are_valid_jobs_for_each_queue(
    database_url: str, imap_service: ImapService, imap_account: ImapAccount,
) -> None:
    ids = seed(database_url, _mailbox(imap_service, imap_account), key=KEY)
    whatsapp, transcription, poll = commands(ids)

    assert parse_job("whatsapp", whatsapp.split(" enqueue whatsapp ", 1)[1].strip("'")).payload.data.message_id == (
        ids.whatsapp_message_id)
    assert parse_job("transcription", transcription.split(" enqueue transcription ", 1)[1].strip("'")).payload.\
        message_id == ids.voice_message_id
    assert poll.endswith(f"poll-now {ids.account_id}")


def test_demo_emails_thread_carry_an_attachment_and_non_ascii_text() -> None:
    parsed = [email.message_from_bytes(raw, policy=email.policy.default) for raw in demo_emails()]
    first, reply, attachment, non_ascii = parsed
    assert reply["In-Reply-To"] == first["Message-ID"]
    assert [part.get_filename() for part in attachment.iter_attachments()] == ["packing-list-4711.csv"]
    assert "München" in str(non_ascii["Subject"])
    assert len({m["Message-ID"] for m in parsed}) == 4
