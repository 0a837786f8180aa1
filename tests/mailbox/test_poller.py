"""The poller end to end on Dovecot, PostgreSQL, Azurite and Redis: exactly once, resumable, threaded."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import psycopg
import pytest
import redis
from azure.storage.blob import BlobServiceClient

from shared.mailbox.imap import ImapConnector, ImapEndpoint, ImapSession
from shared.mailbox.poller import MailboxPoller
from shared.store import InvalidRecord, StoreError, StoreUnavailable
from shared.store.postgres import PostgresStore
from tests.mailbox.conftest import LEGACY_KEY
from tests.mailbox.messages import simple_message
from tests.mailbox.plaintext_proxy import StartTlsHidingProxy
from tests.support.services import ImapAccount, ImapService

Db = psycopg.Connection[dict[str, Any]]


def _messages(db: Db) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM communication_messages ORDER BY created_at, external_id").fetchall()


def _log(db: Db, account: str) -> list[tuple[int, str]]:
    rows = db.execute(
        "SELECT uid, status FROM email_ingest_log WHERE email_account_id = %s ORDER BY uidvalidity, uid", [account]
    ).fetchall()
    return [(r["uid"], r["status"]) for r in rows]


def _state(db: Db, account: str) -> dict[str, Any]:
    row = db.execute("SELECT * FROM email_sync_state WHERE email_account_id = %s", [account]).fetchone()
    assert row is not None
    return row


def _account(db: Db, account: str) -> dict[str, Any]:
    row = db.execute("SELECT * FROM email_accounts WHERE id = %s", [account]).fetchone()
    assert row is not None
    return row


class _Killed(BaseException):
    """Stands in for the process dying: nothing after it runs (not even the lease release)."""


class _FaultyStore:
    """Delegates to a real store; ``fault(name, kwargs, call_number)`` may return an exception to raise."""

    def __init__(self, inner: PostgresStore, fault: Callable[[str, Any, int], BaseException | None]) -> None:
        self._inner = inner
        self._fault = fault
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            error = self._fault(name, args[0] if args else kwargs, self.calls[name])
            if error is not None:
                raise error
            return target(*args, **kwargs)

        return call


def test_first_poll_stores_each_message_once_and_an_idle_poll_only_selects(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db, redis_client: redis.Redis,
) -> None:
    agent = db.execute("INSERT INTO users (email) VALUES ('agent@banxway.test') RETURNING id").fetchone()
    assert agent is not None
    account = make_email_account(imap_account, default_tags=["email", "inbound"], auto_assign_to=str(agent["id"]))
    for n in range(3):
        imap_service.append(simple_message(subject=f"Rate request {n}"), user=imap_account.user)
    pubsub = redis_client.pubsub()
    pubsub.subscribe("test:messages:created")

    report = make_poller().poll(account)

    assert (report.outcome, report.sync, report.stored) == ("polled", "first_sync", 3)
    rows = _messages(db)
    assert len(rows) == 3
    assert {r["direction"] for r in rows} == {"INBOUND"}
    assert {str(r["email_account_id"]) for r in rows} == {account}
    thread = db.execute("SELECT * FROM communication_threads WHERE id = %s", [rows[0]["thread_id"]]).fetchone()
    assert thread is not None
    assert thread["tags"] == ["email", "inbound"]
    assert str(thread["assigned_to"]) == str(agent["id"])
    assert str(thread["email_account_id"]) == account
    uids = [uid for uid, _ in _log(db, account)]
    assert _log(db, account) == [(uid, "stored") for uid in uids]
    state = _state(db, account)
    assert state["last_uid"] == max(uids)
    assert state["lease_owner"] is None
    assert _account(db, account)["last_poll_status"] == "SUCCESS"
    events = []
    deadline = time.monotonic() + 5
    while len(events) < 3 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] in (b"message", "message"):
            events.append(json.loads(message["data"]))
    assert {e["messageId"] for e in events} == {str(r["id"]) for r in rows}
    assert all(e["type"] == "message.created" and e["accountId"] == account for e in events)

    idle = make_poller().poll(account)
    assert (idle.outcome, idle.stored) == ("idle", 0)
    assert len(_messages(db)) == 3


def test_repeated_polls_pick_up_only_new_mail(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db,
) -> None:
    account = make_email_account(imap_account)
    imap_service.append(simple_message(subject="one"), user=imap_account.user)
    assert make_poller().poll(account).stored == 1
    for n in range(25):
        imap_service.append(simple_message(subject=f"more {n}"), user=imap_account.user)
    second = make_poller(chunk_size=7).poll(account)
    assert (second.sync, second.stored, second.duplicates) == ("incremental", 25, 0)
    assert make_poller().poll(account).outcome == "idle"
    assert len(_messages(db)) == 26
    assert _state(db, account)["last_uid"] == imap_service.mailbox_status(user=imap_account.user)["uidnext"] - 1


def test_overlapping_polls_of_one_mailbox_store_each_message_once(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db,
) -> None:
    account = make_email_account(imap_account)
    for n in range(40):
        imap_service.append(simple_message(subject=f"m{n}"), user=imap_account.user)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        outcomes.append(make_poller(chunk_size=5).poll(account).outcome)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count("polled") >= 1
    assert set(outcomes) <= {"polled", "held", "idle"}
    make_poller().poll(account)  # whatever the race left, one more poll finishes the mailbox
    rows = _messages(db)
    assert len(rows) == 40
    assert len({r["external_id"] for r in rows}) == 40


def test_same_email_in_two_accounts_is_stored_once_and_logged_as_duplicate(
    imap_service: ImapService, make_email_account: Callable[..., str], make_poller: Callable[..., MailboxPoller],
    db: Db,
) -> None:
    first_user, second_user = imap_service.create_user(), imap_service.create_user()
    try:
        raw = simple_message(subject="CC'd to both inboxes", message_id="<shared-1@example.com>")
        imap_service.append(raw, user=first_user.user)
        imap_service.append(raw, user=second_user.user)
        first, second = make_email_account(first_user), make_email_account(second_user)
        assert make_poller().poll(first).stored == 1
        report = make_poller().poll(second)
        assert (report.stored, report.duplicates) == (0, 1)
        assert len(_messages(db)) == 1
        assert [status for _, status in _log(db, second)] == ["duplicate"]
        assert str(_messages(db)[0]["email_account_id"]) == first
    finally:
        imap_service.delete_user(first_user)
        imap_service.delete_user(second_user)


def test_uidvalidity_change_resyncs_without_loss_or_duplicates(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db,
) -> None:
    account = make_email_account(imap_account)
    old = [simple_message(subject=f"old {n}") for n in range(5)]
    for raw in old:
        imap_service.append(raw, user=imap_account.user)
    assert make_poller().poll(account).stored == 5
    before = _state(db, account)["uidvalidity"]

    # The folder is rebuilt (e.g. a server migration): same old mail with new UIDs, plus mail that arrived
    # meanwhile — including one without a Message-ID, deduplicated by its bytes.
    imap_service.recreate_folder("INBOX", user=imap_account.user)
    no_id = simple_message(subject="no id", message_id=None)
    for raw in [*old, simple_message(subject="new 1"), no_id, simple_message(subject="new 2")]:
        imap_service.append(raw, user=imap_account.user)
    report = make_poller().poll(account)

    assert (report.sync, report.stored, report.duplicates) == ("resync", 3, 5)
    assert _state(db, account)["uidvalidity"] != before
    assert len(_messages(db)) == 8
    assert make_poller().poll(account).outcome == "idle"
    imap_service.append(no_id, user=imap_account.user)  # the very same bytes again: still one row
    assert make_poller().poll(account).duplicates == 1
    assert len(_messages(db)) == 8


def test_poll_killed_mid_chunk_resumes_without_loss_or_duplicates(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], pg_store: PostgresStore, db: Db,
) -> None:
    account = make_email_account(imap_account)
    for n in range(12):
        imap_service.append(simple_message(subject=f"m{n}"), user=imap_account.user)

    def die(name: str, _arg: Any, call: int) -> BaseException | None:
        if (name == "record_email" and call == 7) or name in ("release_mailbox", "update_poll_status"):
            return _Killed()
        return None

    with pytest.raises(_Killed):
        make_poller(store=_FaultyStore(pg_store, die), chunk_size=5, lease_ttl_s=1.0).poll(account)
    assert len(_messages(db)) == 6  # 5 in the first chunk (checkpointed) + 1 in the second (not checkpointed)
    state = _state(db, account)
    assert state["lease_owner"] is not None  # the dead poller still holds the lease ...
    assert make_poller().poll(account).outcome == "held"  # ... so nobody else polls until it expires
    time.sleep(1.2)

    report = make_poller(chunk_size=5).poll(account)
    assert (report.outcome, report.stored, report.duplicates) == ("polled", 6, 1)
    rows = _messages(db)
    assert len(rows) == 12
    assert len({r["external_id"] for r in rows}) == 12
    assert [status for _, status in _log(db, account)] == ["stored"] * 12


def test_replies_thread_by_in_reply_to_and_by_references(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db,
) -> None:
    account = make_email_account(imap_account)
    imap_service.append(simple_message(subject="Quote", message_id="<root@x.test>"), user=imap_account.user)
    imap_service.append(simple_message(subject="Re: Quote", message_id="<r1@x.test>", in_reply_to="<root@x.test>"),
                        user=imap_account.user)
    # A reply whose In-Reply-To is unknown to us, but whose References contain the thread.
    imap_service.append(simple_message(subject="Re: Re: Quote", message_id="<r2@x.test>",
                                       in_reply_to="<not-ours@elsewhere>",
                                       references="<root@x.test> <r1@x.test> <not-ours@elsewhere>"),
                        user=imap_account.user)
    imap_service.append(simple_message(subject="Unrelated", message_id="<other@x.test>"), user=imap_account.user)
    make_poller().poll(account)
    by_id = {r["external_id"]: r for r in _messages(db)}
    root = by_id["<root@x.test>"]["thread_id"]
    assert by_id["<r1@x.test>"]["thread_id"] == root
    assert by_id["<r2@x.test>"]["thread_id"] == root
    assert by_id["<other@x.test>"]["thread_id"] != root
    thread = db.execute("SELECT message_count FROM communication_threads WHERE id = %s", [root]).fetchone()
    assert thread is not None
    assert thread["message_count"] == 3


def _hard_messages() -> dict[str, bytes]:
    with_attachment = EmailMessage()
    with_attachment["From"] = "docs@example.com"
    with_attachment["Subject"] = "Invoice attached"
    with_attachment["Message-ID"] = "<att@example.com>"
    with_attachment.set_content("see attachment")
    with_attachment.add_attachment(b"%PDF-1.4\x00\x01", maintype="application", subtype="pdf",
                                   filename="invoice 7.pdf")
    return {
        "no_id": simple_message(subject="no message id", message_id=None),
        "latin1": (b"From: jose@example.com\r\nSubject: =?ISO-8859-1?Q?Caf=E9?=\r\nMessage-ID: <l1@example.com>\r\n"
                   b"Content-Type: text/plain; charset=ISO-8859-1\r\n\r\nUn caf\xe9 cr\xe8me\r\n"),
        "sjis": (b"From: jp@example.jp\r\nSubject: sjis\r\nMessage-ID: <sj@example.jp>\r\n"
                 b"Content-Type: text/plain; charset=Shift_JIS\r\n\r\n" + "見積依頼".encode("shift_jis") + b"\r\n"),
        "nul": simple_message(subject="nul\x00subject", body="before\x00after", message_id="<nul@example.com>"),
        "long_subject": simple_message(subject="L" * 1000, message_id="<long@example.com>"),
        "malformed": (b"From: broken\r\nMessage-ID: <mal@example.com>\r\nDate: not a date\r\n"
                      b'Content-Type: multipart/mixed; boundary="Z"\r\n\r\n--Z\r\n'
                      b"Content-Type: text/plain; charset=nonexistent-charset\r\n"
                      b"Content-Transfer-Encoding: base64\r\n\r\n!!notbase64\r\n--Z\r\nContent-Type: multipart/"),
        "oversized": simple_message(subject="huge", body="x" * 20_000, message_id="<big@example.com>"),
        "attachment": with_attachment.as_bytes(),
        "last": simple_message(subject="the mailbox keeps moving", message_id="<last@example.com>"),
    }


def test_hard_messages_are_each_stored_or_recorded_and_the_mailbox_keeps_moving(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db, blob_service: BlobServiceClient,
    attachments_container: str,
) -> None:
    account = make_email_account(imap_account)
    hard = _hard_messages()
    for raw in hard.values():
        imap_service.append(raw, user=imap_account.user)

    report = make_poller(max_message_bytes=10_000).poll(account)

    assert (report.stored, report.skipped, report.failed) == (8, 1, 0)
    by_id = {r["external_id"]: r for r in _messages(db)}
    assert by_id["<l1@example.com>"]["content"].strip() == "Un café crème"
    assert by_id["<l1@example.com>"]["subject"] == "Café"
    assert by_id["<sj@example.jp>"]["content"].strip() == "見積依頼"
    # Dovecot itself turns NUL into 0x80 when storing; either way no NUL reaches the database.
    assert "\x00" not in by_id["<nul@example.com>"]["content"]
    assert by_id["<nul@example.com>"]["content"].strip() in ("beforeafter", "before\ufffdafter")
    assert by_id["<nul@example.com>"]["subject"] in ("nulsubject", "nul\ufffdsubject")
    assert by_id["<long@example.com>"]["subject"] == "L" * 500
    assert "<mal@example.com>" in by_id
    synthetic = [k for k in by_id if k.endswith("@no-message-id.banxway>")]
    assert len(synthetic) == 1
    assert "<big@example.com>" not in by_id
    skipped = db.execute("SELECT status, last_error FROM email_ingest_log WHERE status = 'skipped'").fetchall()
    assert len(skipped) == 1
    assert "the limit is 10000" in skipped[0]["last_error"]
    attachments = by_id["<att@example.com>"]["attachments"]
    assert [(a["filename"], a["content_type"], a["size"]) for a in attachments] == [
        ("invoice 7.pdf", "application/pdf", 10),
    ]
    blob = blob_service.get_blob_client(attachments_container, attachments[0]["blob_name"])
    assert blob.download_blob().readall() == b"%PDF-1.4\x00\x01"
    assert "<last@example.com>" in by_id
    assert _state(db, account)["last_uid"] == imap_service.mailbox_status(user=imap_account.user)["uidnext"] - 1


def test_a_message_that_keeps_failing_is_retried_then_skipped_without_blocking_later_mail(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], pg_store: PostgresStore, db: Db,
) -> None:
    account = make_email_account(imap_account)
    for subject in ("ok 1", "poison", "ok 2"):
        imap_service.append(simple_message(subject=subject, message_id=f"<{subject.replace(' ', '')}@x>"),
                            user=imap_account.user)

    def poison(name: str, arg: Any, _call: int) -> BaseException | None:
        if name == "record_email" and arg.message_id == "<poison@x>":
            return InvalidRecord("value rejected by the database: value too long (SQLSTATE 22001)")
        return None

    store = _FaultyStore(pg_store, poison)
    first = make_poller(store=store, max_tries_per_message=2).poll(account)
    assert (first.stored, first.failed) == (2, 1)  # later mail is stored; the checkpoint waits below poison
    uids = [uid for uid, _ in _log(db, account)]
    assert _state(db, account)["last_uid"] == uids[0]

    second = make_poller(store=store, max_tries_per_message=2).poll(account)
    assert (second.skipped, second.duplicates) == (1, 1)
    assert _state(db, account)["last_uid"] == uids[-1]
    row = db.execute("SELECT status, attempts, last_error FROM email_ingest_log WHERE message_id = '<poison@x>'"
                     ).fetchone()
    assert row is not None
    assert row["status"] == "skipped"
    assert "gave up after 2 tries" in row["last_error"]
    assert make_poller(store=store).poll(account).outcome == "idle"  # never fetched again


def test_wrong_password_marks_the_account_failed_and_the_next_poll_retries(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db, caplog: pytest.LogCaptureFixture,
) -> None:
    account = make_email_account(imap_account, password="wrong-password")
    imap_service.append(simple_message(), user=imap_account.user)
    report = make_poller().poll(account)
    assert (report.outcome, report.error_code) == ("failed", "imap_auth_failed")
    row = _account(db, account)
    assert row["last_poll_status"] == "FAILED"
    assert "authentication failed" in row["last_poll_error"]
    assert "wrong-password" not in caplog.text
    assert _state(db, account)["lease_owner"] is None

    # The password is fixed (stored under the legacy key, which the poller also tries): the next poll works.
    db.execute("UPDATE email_accounts SET imap_pass_encrypted = encrypt_email_password(%s, %s) WHERE id = %s",
               [imap_account.password, LEGACY_KEY, account])
    again = make_poller().poll(account)
    assert (again.outcome, again.stored) == ("polled", 1)
    row = _account(db, account)
    assert (row["last_poll_status"], row["last_poll_error"]) == ("SUCCESS", None)


def test_unreachable_server_marks_the_account_failed_with_a_clear_error(
    imap_account: ImapAccount, make_email_account: Callable[..., str], make_poller: Callable[..., MailboxPoller],
    db: Db,
) -> None:
    account = make_email_account(imap_account, port=1)  # nothing listens on port 1
    report = make_poller().poll(account)
    assert (report.outcome, report.error_code) == ("failed", "imap_unavailable")
    assert "unreachable" in _account(db, account)["last_poll_error"]
    assert _account(db, account)["last_poll_status"] == "FAILED"


def test_first_sync_is_bounded_by_the_backfill_window(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db,
) -> None:
    account = make_email_account(imap_account)
    with imap_service.connect(imap_account) as client:
        client.append("INBOX", simple_message(subject="ancient"), msg_time=datetime.now(UTC) - timedelta(days=60))
        client.append("INBOX", simple_message(subject="recent"))
    report = make_poller(backfill_days=7).poll(account)
    assert (report.sync, report.stored) == ("first_sync", 1)
    assert [r["subject"] for r in _messages(db)] == ["recent"]
    imap_service.append(simple_message(subject="later"), user=imap_account.user)
    assert make_poller().poll(account).stored == 1


def _with_attachment(message_id: str, content: bytes, *, subject: str, content_type: str = "application/pdf") -> bytes:
    email = EmailMessage()
    email["From"] = "docs@example.com"
    email["Subject"] = subject
    email["Message-ID"] = message_id
    email.set_content("see attachment")
    maintype, subtype = content_type.split("/")
    email.add_attachment(content, maintype=maintype, subtype=subtype, filename="invoice.pdf")
    return email.as_bytes()


def test_a_later_email_reusing_a_message_id_cannot_replace_a_stored_attachment(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db, blob_service: BlobServiceClient,
    attachments_container: str,
) -> None:
    account = make_email_account(imap_account)
    original = b"%PDF-1.4 the customer's real invoice"
    imap_service.append(_with_attachment("<invoice-9@customer.example>", original, subject="Invoice"),
                        user=imap_account.user)
    assert make_poller().poll(account).stored == 1

    # Message-IDs are public (quoted in In-Reply-To/References): anyone can send a mail reusing one, with an
    # attachment of the same name at the same position.
    forged = _with_attachment("<invoice-9@customer.example>", b"<script>forged</script>", subject="Invoice",
                              content_type="text/html")
    imap_service.append(forged, user=imap_account.user)
    report = make_poller().poll(account)

    assert (report.stored, report.duplicates) == (0, 1)
    [row] = _messages(db)
    [attachment] = row["attachments"]
    blob = blob_service.get_blob_client(attachments_container, attachment["blob_name"])
    assert blob.download_blob().readall() == original
    assert attachment["sha256"] == hashlib.sha256(original).hexdigest()
    assert blob.get_blob_properties().content_settings.content_type == "application/pdf"


def test_an_unexpected_store_error_propagates_and_is_never_counted_as_a_message_failure(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], pg_store: PostgresStore, db: Db,
) -> None:
    account = make_email_account(imap_account)
    for subject in ("ok 1", "bug", "ok 2"):
        imap_service.append(simple_message(subject=subject, message_id=f"<{subject.replace(' ', '')}@x>"),
                            user=imap_account.user)

    def bug(name: str, arg: Any, _call: int) -> BaseException | None:
        if name == "record_email" and arg.message_id == "<bug@x>":
            return StoreError("unexpected database error: column does not match (SQLSTATE XX000)")
        return None

    store = _FaultyStore(pg_store, bug)
    for _ in range(3):  # more polls than max_tries_per_message: the message is never given up on
        with pytest.raises(StoreError, match="XX000"):
            make_poller(store=store, max_tries_per_message=2).poll(account)
    assert store.calls.get("record_email_failure", 0) == 0
    assert "update_poll_status" not in store.calls  # the account does not show SUCCESS
    assert _account(db, account)["last_poll_status"] != "SUCCESS"
    assert db.execute("SELECT 1 FROM email_ingest_log WHERE message_id = '<bug@x>'").fetchall() == []
    assert _state(db, account)["lease_owner"] is None

    fixed = make_poller(max_tries_per_message=2).poll(account)  # the bug is fixed: nothing was lost
    assert (fixed.stored, fixed.duplicates) == (2, 1)  # the aborted poll stopped at the bug, before "ok 2"
    assert {r["external_id"] for r in _messages(db)} == {"<ok1@x>", "<bug@x>", "<ok2@x>"}


@dataclass(frozen=True)
class _BodyLosingConnector(ImapConnector):
    """Real Dovecot sessions whose FETCH answers leave out ``BODY[]`` of messages containing ``marker``."""

    marker: bytes = b"Subject: lost"

    def open(self, endpoint: ImapEndpoint) -> ImapSession:
        session = super().open(endpoint)
        real_fetch = session.client.fetch

        def fetch(messages: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
            answer = real_fetch(messages, data, *args, **kwargs)
            for item in answer.values():
                if self.marker in item.get(b"BODY[]", b""):
                    del item[b"BODY[]"]
            return answer

        session.client.fetch = fetch
        return session


def test_a_message_whose_body_is_missing_from_the_fetch_is_retried_and_not_passed_over(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db,
) -> None:
    account = make_email_account(imap_account)
    for subject in ("ok 1", "lost", "ok 2"):
        imap_service.append(simple_message(subject=subject, message_id=f"<{subject.replace(' ', '')}@x>"),
                            user=imap_account.user)
    losing = _BodyLosingConnector(ca_file=imap_service.ca_file, timeout_s=5.0, connect_timeout_s=2.0)

    first = make_poller(connector=losing).poll(account)

    assert (first.stored, first.failed) == (2, 1)
    uids = [uid for uid, _ in _log(db, account)]
    assert _log(db, account) == [(uids[0], "stored"), (uids[1], "failed"), (uids[2], "stored")]
    assert _state(db, account)["last_uid"] == uids[0]  # the checkpoint waits below the missing body
    second = make_poller().poll(account)  # the server answers properly again
    assert (second.stored, second.duplicates) == (1, 1)
    assert {r["external_id"] for r in _messages(db)} == {"<ok1@x>", "<lost@x>", "<ok2@x>"}
    assert _state(db, account)["last_uid"] == uids[2]


def test_a_body_that_stays_missing_is_skipped_after_the_configured_tries(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db,
) -> None:
    account = make_email_account(imap_account)
    for subject in ("lost", "ok"):
        imap_service.append(simple_message(subject=subject, message_id=f"<{subject}@x>"), user=imap_account.user)
    losing = _BodyLosingConnector(ca_file=imap_service.ca_file, timeout_s=5.0, connect_timeout_s=2.0)

    assert make_poller(connector=losing, max_tries_per_message=2).poll(account).failed == 1
    assert make_poller(connector=losing, max_tries_per_message=2).poll(account).skipped == 1
    row = db.execute("SELECT status, last_error FROM email_ingest_log WHERE uid = %s AND email_account_id = %s",
                     [_log(db, account)[0][0], account]).fetchone()
    assert row is not None
    assert row["status"] == "skipped"
    assert "gave up after 2 tries" in row["last_error"]
    assert "BODY[]" in row["last_error"]
    assert make_poller(connector=losing).poll(account).outcome == "idle"


def test_a_plain_text_account_on_a_server_without_starttls_fails_without_sending_the_password(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], db: Db,
) -> None:
    imap_service.append(simple_message(), user=imap_account.user)
    with StartTlsHidingProxy(imap_service.host, imap_service.port) as proxy:
        account = make_email_account(imap_account, port=proxy.port)
        db.execute("UPDATE email_accounts SET imap_tls = false WHERE id = %s", [account])
        report = make_poller().poll(account)
        sent = proxy.received
    assert (report.outcome, report.error_code) == ("failed", "imap_plaintext_refused")
    row = _account(db, account)
    assert row["last_poll_status"] == "FAILED"
    assert "STARTTLS" in row["last_poll_error"]
    assert imap_account.password.encode() not in sent
    assert _messages(db) == []


def test_the_lease_is_released_even_when_recording_the_poll_status_fails(
    imap_service: ImapService, imap_account: ImapAccount, make_email_account: Callable[..., str],
    make_poller: Callable[..., MailboxPoller], pg_store: PostgresStore, db: Db,
) -> None:
    account = make_email_account(imap_account)
    imap_service.append(simple_message(), user=imap_account.user)

    def down(name: str, _arg: Any, _call: int) -> BaseException | None:
        return StoreUnavailable("database temporarily unavailable") if name == "update_poll_status" else None

    with pytest.raises(StoreUnavailable):  # the job boundary retries the job
        make_poller(store=_FaultyStore(pg_store, down)).poll(account)
    assert _state(db, account)["lease_owner"] is None
    assert make_poller().poll(account).outcome == "idle"  # not "held" for EMAIL_LEASE_TTL_S
