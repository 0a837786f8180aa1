"""Poll one mailbox incrementally and store each new email exactly once.

One run: take the mailbox lease → decrypt the password (configured key, then legacy) → connect (verified
TLS, timeouts) → ``SELECT`` read-only → compare with the checkpoint:

- same UIDVALIDITY and ``UIDNEXT <= last_uid + 1`` → nothing new, done after the SELECT;
- same UIDVALIDITY → the UIDs above ``last_uid``;
- no checkpoint (first sync) → the UIDs inside the backfill window (``EMAIL_BACKFILL_DAYS``);
- a new UIDVALIDITY → a bounded resync: the UIDs since the last successful poll (or the backfill window),
  at most ``EMAIL_RESYNC_MAX_MESSAGES``, deduplicated by Message-ID in the store;

then fetch in chunks (sizes first; over-size messages are recorded as skipped), parse, upload attachments,
store atomically, publish "message created", and advance the checkpoint after each chunk — only past
messages that are stored or recorded as skipped. A message that fails (unparseable, values the store
rejects, or a body the server left out of its FETCH answer) is recorded with its reason; the checkpoint
waits below it (later messages are still stored) and it is retried on the next poll, until
``EMAIL_MAX_TRIES_PER_MESSAGE`` tries, after which it is recorded as skipped and the mailbox moves on.

A wrong password, an unreachable server or a plain-text server without STARTTLS marks the account FAILED
with a clear error; the next poll retries. Store errors propagate — transient ones (the job boundary retries
the job) and unexpected ones (a bug or schema mismatch: never counted against a message); the checkpoint is
safe and the mailbox lease is always released.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.mailbox.attachments import AttachmentStoreUnavailable
from shared.mailbox.events import publish_message_created
from shared.mailbox.imap import (
    FetchedMessage,
    ImapConnector,
    ImapEndpoint,
    ImapError,
    ImapSession,
    MailboxStatus,
    MissingBody,
    OversizedMessage,
)
from shared.mailbox.parse import EmailParseError, ParsedAttachment, parse_email
from shared.store import (
    EmailAccount,
    InboundEmail,
    InvalidRecord,
    PasswordNotDecryptable,
    Store,
    StoreError,
    SyncState,
)

_Item = FetchedMessage | OversizedMessage | MissingBody

if TYPE_CHECKING:
    from redis import Redis

    from shared.settings import Settings

__all__ = ["AttachmentSink", "MailboxPoller", "PollConfig", "PollReport"]

log = logging.getLogger(__name__)


class AttachmentSink(Protocol):
    """Where attachment contents go (``shared.mailbox.attachments.AttachmentStore``)."""

    def upload(self, message_id: str, attachment: ParsedAttachment) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PollConfig:
    """The poller's knobs (from settings; tests set them directly)."""

    keys: tuple[str, ...] = ()
    mailbox: str = "INBOX"
    chunk_size: int = 50
    max_message_bytes: int = 25 * 1024 * 1024
    max_tries_per_message: int = 3
    backfill_days: int = 7
    resync_max_messages: int = 1000
    lease_ttl_s: float = 300.0
    events_channel: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PollConfig:
        """Build from ``EMAIL_*`` settings; the keys are the configured key, then the legacy key."""
        keys = tuple(
            key.get_secret_value()
            for key in (settings.email_encryption_key, settings.email_legacy_encryption_key)
            if key is not None
        )
        return cls(
            keys=keys, chunk_size=settings.email_fetch_chunk, max_message_bytes=settings.email_max_message_bytes,
            max_tries_per_message=settings.email_max_tries_per_message, backfill_days=settings.email_backfill_days,
            resync_max_messages=settings.email_resync_max_messages, lease_ttl_s=float(settings.email_lease_ttl_s),
            events_channel=settings.email_events_channel,
        )


@dataclass
class PollReport:
    """What one poll did. ``outcome``: polled, idle, held (another poller has it), missing, disabled, failed."""

    account_id: str
    outcome: str = "polled"
    sync: str | None = None  # incremental | first_sync | resync
    stored: int = 0
    duplicates: int = 0
    skipped: int = 0
    failed: int = 0
    last_uid: int | None = None
    error: str | None = None
    error_code: str | None = None
    stored_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    sync: str
    uids: list[int]
    floor: int  # checkpoint to start from (UIDs <= floor are out of scope)
    reset: bool  # the checkpoint must first move to (new UIDVALIDITY, floor)


class _Stop(Exception):
    """Abort the poll after a transient failure inside it; the checkpoint stays where it is."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class MailboxPoller:
    """Polls one account's mailbox. Receives its collaborators (store, IMAP connector, blob sink, Redis)."""

    def __init__(
        self,
        *,
        store: Store,
        connector: ImapConnector,
        attachments: AttachmentSink,
        config: PollConfig,
        redis: Redis | None = None,
        owner: str | None = None,
        today: date | None = None,
    ) -> None:
        self._store = store
        self._connector = connector
        self._attachments = attachments
        self._config = config
        self._redis = redis
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._today = today

    def poll(self, account_id: str) -> PollReport:
        """Poll ``account_id`` once. Raises only for transient store errors (retry the job) or bugs."""
        cfg = self._config
        report = PollReport(account_id)
        claim = self._store.claim_mailbox(account_id, cfg.mailbox, owner=self._owner, lease_s=cfg.lease_ttl_s)
        if not claim.won or claim.state is None:
            report.outcome = "missing" if claim.outcome == "missing" else "held"
            return report
        interrupted: str | None = "poll interrupted"
        try:
            self._run(account_id, claim.state, report)
            if report.outcome in ("polled", "idle", "failed"):
                self._store.update_poll_status(account_id, error=report.error)
            interrupted = None
        except BaseException as exc:
            interrupted = f"poll interrupted: {type(exc).__name__}"
            raise
        finally:  # always give the lease back, whatever failed (it would block the inbox for the lease TTL)
            self._release(account_id, interrupted or report.error)
        return report

    def _run(self, account_id: str, state: SyncState, report: PollReport) -> None:
        try:
            account = self._store.get_email_account(account_id, keys=self._config.keys)
            if account is None:
                report.outcome = "missing"
            elif not (account.is_active and account.imap_enabled):
                report.outcome = "disabled"
            else:
                self._sync(account, state, report)
        except (ImapError, PasswordNotDecryptable) as exc:
            report.outcome, report.error, report.error_code = "failed", exc.reason, exc.code
            log.warning("mailbox poll failed: account_id=%s code=%s error=%s", account_id, exc.code, exc.reason)
        except _Stop as stop:
            report.outcome, report.error = "failed", str(stop.error)
            report.error_code = getattr(stop.error, "code", "poll_stopped")
            log.warning("mailbox poll stopped: account_id=%s error=%s", account_id, report.error)

    def _release(self, account_id: str, error: str | None) -> None:
        try:
            self._store.release_mailbox(account_id, self._config.mailbox, owner=self._owner, error=error)
        except (StoreError, InvalidRecord, OSError) as exc:  # the lease expires by itself
            log.warning("mailbox lease not released: account_id=%s error=%s", account_id, exc)

    def _sync(self, account: EmailAccount, state: SyncState, report: PollReport) -> None:
        endpoint = ImapEndpoint(
            account.imap_host, account.imap_port, account.imap_user, account.imap_password, use_tls=account.imap_tls
        )
        with self._connector.open(endpoint) as session:
            status = session.select(self._config.mailbox)
            plan = self._plan(session, state, status)
            report.sync = plan.sync
            if plan.reset:
                self._advance(account.id, status, plan.floor)
            report.last_uid = plan.floor if plan.reset else state.last_uid
            if not plan.uids:
                report.outcome = "idle"
                return
            self._ingest_all(session, account, status, plan, report)

    def _plan(self, session: ImapSession, state: SyncState, status: MailboxStatus) -> _Plan:
        cfg = self._config
        if state.uidvalidity == status.uidvalidity:
            if status.uidnext is not None and status.uidnext <= state.last_uid + 1:
                return _Plan("incremental", [], state.last_uid, reset=False)
            return _Plan("incremental", session.uids_after(state.last_uid), state.last_uid, reset=False)
        today = self._today or datetime.now(UTC).date()
        if state.uidvalidity is None:
            sync, since = "first_sync", today - timedelta(days=cfg.backfill_days)
            uids = session.uids_since(since) if cfg.backfill_days > 0 else []
        else:
            # Everything since the last good poll (a day of slack: SINCE is day-granular, server zone).
            sync, since = "resync", today - timedelta(days=cfg.backfill_days)
            if state.last_success_at is not None:
                since = min(since, state.last_success_at.date() - timedelta(days=1))
            uids = session.uids_since(since)[-cfg.resync_max_messages :]
            log.warning("mailbox UIDVALIDITY changed: account_id=%s old=%s new=%s resync=%d messages",
                        state.account_id, state.uidvalidity, status.uidvalidity, len(uids))
        if uids:
            floor = uids[0] - 1
        elif status.uidnext is not None:
            floor = status.uidnext - 1
        else:
            floor = max(session.uids_after(0), default=0)
        return _Plan(sync, [uid for uid in uids if uid > floor], floor, reset=True)

    def _advance(self, account_id: str, status: MailboxStatus, last_uid: int) -> None:
        if not self._store.advance_checkpoint(
            account_id, self._config.mailbox, owner=self._owner, uidvalidity=status.uidvalidity,
            last_uid=last_uid, highest_modseq=status.highest_modseq,
        ):
            raise _Stop(RuntimeError("mailbox lease lost to another poller"))

    def _ingest_all(
        self, session: ImapSession, account: EmailAccount, status: MailboxStatus, plan: _Plan, report: PollReport
    ) -> None:
        cfg = self._config
        checkpoint = plan.floor
        blocked = False  # a message below is waiting for a retry: the checkpoint must not pass it
        for requested, items in session.iter_chunks(
            plan.uids, chunk_size=cfg.chunk_size, max_message_bytes=cfg.max_message_bytes
        ):
            done_before = checkpoint
            for item in items:
                if not self._ingest_one(item, account, status.uidvalidity, report) and not blocked:
                    blocked = True
                    checkpoint = item.uid - 1
            if not blocked:
                checkpoint = requested[-1]
            if checkpoint != done_before:
                self._advance(account.id, status, checkpoint)
                report.last_uid = checkpoint
            if not self._store.renew_mailbox_lease(
                account.id, cfg.mailbox, owner=self._owner, lease_s=cfg.lease_ttl_s
            ):
                raise _Stop(RuntimeError("mailbox lease lost to another poller"))

    def _ingest_one(self, item: _Item, account: EmailAccount, uidvalidity: int, report: PollReport) -> bool:
        """Store or record one message; False when it failed and must be retried later.

        Only per-message failures (unparseable, rejected values, body missing from the FETCH answer) are
        recorded and retried here; ``StoreError`` (a bug or schema mismatch) and ``StoreUnavailable`` propagate.
        """
        if isinstance(item, MissingBody):
            reason = f"MissingBody: the server's FETCH answer had no BODY[] for UID {item.uid} ({item.size} bytes)"
            return self._record_failure(item.uid, account, uidvalidity, reason, message_id=None, raw_sha256=None,
                                        report=report)
        if isinstance(item, OversizedMessage):
            self._store.record_email_failure(
                account_id=account.id, mailbox=self._config.mailbox, uidvalidity=uidvalidity, uid=item.uid,
                reason=f"message is {item.size} bytes; the limit is {self._config.max_message_bytes}",
                skipped=True,
            )
            report.skipped += 1
            return True
        message_id: str | None = None
        raw_sha256: str | None = None
        try:
            parsed = parse_email(item.raw, internaldate=item.internaldate)
            message_id, raw_sha256 = parsed.message_id, parsed.raw_sha256
            uploaded = [self._attachments.upload(parsed.message_id, a) for a in parsed.attachments]
            result = self._store.record_email(InboundEmail(
                account_id=account.id, mailbox=self._config.mailbox, uidvalidity=uidvalidity, uid=item.uid,
                message_id=parsed.message_id, from_address=parsed.from_address, from_name=parsed.from_name,
                subject=parsed.subject, content=parsed.text, html_content=parsed.html,
                to_addresses=list(parsed.to_addresses), cc_addresses=list(parsed.cc_addresses),
                in_reply_to=parsed.in_reply_to, references=list(parsed.references), sent_at=parsed.sent_at,
                attachments=uploaded, raw_sha256=parsed.raw_sha256,
            ))
        except AttachmentStoreUnavailable as exc:
            raise _Stop(exc) from exc
        except (EmailParseError, InvalidRecord) as exc:
            return self._record_failure(
                item.uid, account, uidvalidity, f"{type(exc).__name__}: {exc}", message_id=message_id,
                raw_sha256=raw_sha256, report=report,
            )
        if result.created:
            report.stored += 1
            report.stored_ids.append(result.message_row_id)
            if self._redis is not None and self._config.events_channel:
                publish_message_created(self._redis, self._config.events_channel, result, account_id=account.id)
        else:
            report.duplicates += 1
        return True

    def _record_failure(
        self, uid: int, account: EmailAccount, uidvalidity: int, reason: str, *,
        message_id: str | None, raw_sha256: str | None, report: PollReport,
    ) -> bool:
        common: dict[str, Any] = {
            "account_id": account.id, "mailbox": self._config.mailbox, "uidvalidity": uidvalidity, "uid": uid,
            "message_id": message_id, "raw_sha256": raw_sha256,
        }
        failure = self._store.record_email_failure(reason=reason, skipped=False, **common)
        log.warning("email not stored: account_id=%s uid=%s try=%s reason=%s", account.id, uid,
                    failure.attempts, reason)
        if failure.status in ("stored", "duplicate"):
            return True
        if failure.attempts >= self._config.max_tries_per_message:
            self._store.record_email_failure(
                reason=f"gave up after {failure.attempts} tries: {reason}", skipped=True, **common
            )
            report.skipped += 1
            return True
        report.failed += 1
        return False
