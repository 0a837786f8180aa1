"""The shared implementation of ``Store``: payloads, cleaning and result parsing.

All atomic steps live in SQL functions (``bx_*(p jsonb) -> jsonb``, shipped in the migrations); a backend
only supplies how to call one, read an account row, decrypt a password and update an account. So both
backends run literally the same SQL, and the contract tests check the wiring rather than two copies of logic.
"""

from __future__ import annotations

import abc
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from shared.store.errors import InvalidRecord, PasswordNotDecryptable
from shared.store.records import (
    DeliveryStatus,
    DeliveryUpdate,
    DispatchResult,
    EmailAccount,
    InboundEmail,
    IngestFailure,
    IngestResult,
    MailboxClaim,
    PendingSend,
    PollableAccount,
    SendClaim,
    SendOutcome,
    SyncState,
    TranscriptionOutcome,
    TranscriptionStart,
)
from shared.store.text import COLUMN_LIMITS, clean_json, clean_text

__all__ = ["ACCOUNT_COLUMNS", "RpcStore"]

logger = logging.getLogger(__name__)

#: Columns read for an account (the password is decrypted separately, never returned in clear by SQL).
ACCOUNT_COLUMNS = (
    "id", "name", "email", "imap_host", "imap_port", "imap_user", "imap_pass_encrypted", "imap_tls",
    "imap_enabled", "is_active", "poll_interval_ms", "default_tags", "auto_assign_to",
)
_ERROR_MAX_CHARS = 4000


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidRecord(f"{what} is not a UUID") from None


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRecord("timestamps must be timezone-aware")
    return value.isoformat()


def _error_text(error: str | None) -> str | None:
    return clean_text(error, _ERROR_MAX_CHARS)


def _sync_state(row: Mapping[str, Any]) -> SyncState:
    return SyncState(
        account_id=str(row["email_account_id"]),
        mailbox=str(row["mailbox"]),
        uidvalidity=row.get("uidvalidity"),
        last_uid=int(row.get("last_uid") or 0),
        highest_modseq=row.get("highest_modseq"),
        lease_owner=row.get("lease_owner"),
        lease_expires_at=_dt(row.get("lease_expires_at")),
        consecutive_failures=int(row.get("consecutive_failures") or 0),
        last_success_at=_dt(row.get("last_success_at")),
    )


def _dispatch(result: Mapping[str, Any]) -> SendClaim:
    return SendClaim(
        outcome=SendOutcome(result["outcome"]),
        attempts=int(result.get("attempts") or 0),
        provider_sid=result.get("provider_sid"),
        last_error=result.get("last_error"),
        claim_expires_at=_dt(result.get("claim_expires_at")),
    )


def _delivery_status(status: DeliveryStatus | str) -> DeliveryStatus:
    try:
        return DeliveryStatus(status)
    except ValueError:
        raise InvalidRecord(f"unknown delivery status {status!r}") from None


def _delivery_update(result: Mapping[str, Any]) -> DeliveryUpdate:
    return DeliveryUpdate(
        outcome=result["outcome"],
        message_id=str(result["message_id"]) if result.get("message_id") else None,
        status=result.get("status"),
    )


class RpcStore(abc.ABC):
    """``Store`` on top of four backend primitives."""

    #: Names the settings an operator should check when the database rejects us.
    config_hint = "the database settings"

    # --- backend primitives
    @abc.abstractmethod
    def _call(self, function: str, payload: Mapping[str, Any]) -> Any:
        """Run ``public.<function>(p => payload)`` in one transaction and return its jsonb result."""

    @abc.abstractmethod
    def _account_row(self, account_id: str) -> Mapping[str, Any] | None:
        """The ``ACCOUNT_COLUMNS`` of one email account, or None."""

    @abc.abstractmethod
    def _decrypt(self, encrypted: str, key: str) -> str | None:
        """``decrypt_email_password(encrypted, key)``; None when the key does not fit."""

    @abc.abstractmethod
    def _update_account(self, account_id: str, values: Mapping[str, Any]) -> None:
        """UPDATE email_accounts SET values WHERE id."""

    @abc.abstractmethod
    def ping(self) -> None:
        """One cheap round trip."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    # --- email poller: accounts
    def list_pollable_accounts(self, *, mailbox: str = "INBOX") -> list[PollableAccount]:
        """See ``Store.list_pollable_accounts``."""
        rows = self._call("bx_list_pollable_accounts", {"mailbox": mailbox})
        return [
            PollableAccount(
                id=str(row["id"]), name=row["name"], email=row["email"],
                poll_interval_ms=row.get("poll_interval_ms"), last_polled_at=_dt(row.get("last_polled_at")),
                last_poll_status=row.get("last_poll_status"),
                lease_expires_at=_dt(row.get("lease_expires_at")), leased=bool(row.get("leased")),
            )
            for row in rows
        ]

    def get_email_account(self, account_id: str, *, keys: Sequence[str]) -> EmailAccount | None:
        """See ``Store.get_email_account``."""
        row = self._account_row(_uuid(account_id, "account_id"))
        if row is None:
            return None
        password = None
        usable_keys = [key for key in keys if key]
        for key in usable_keys:
            password = self._decrypt(row["imap_pass_encrypted"], key)
            if password is not None:
                break
        if password is None:
            raise PasswordNotDecryptable(
                f"IMAP password of email account {row['id']} cannot be decrypted with any of the "
                f"{len(usable_keys)} configured key(s)"
            )
        return EmailAccount(
            id=str(row["id"]), name=row["name"], email=row["email"], imap_host=row["imap_host"],
            imap_port=int(row["imap_port"]), imap_user=row["imap_user"], imap_tls=bool(row["imap_tls"]),
            imap_enabled=bool(row["imap_enabled"]), is_active=bool(row["is_active"]),
            poll_interval_ms=row.get("poll_interval_ms"), default_tags=tuple(row.get("default_tags") or ()),
            auto_assign_to=str(row["auto_assign_to"]) if row.get("auto_assign_to") else None,
            imap_password=password,
        )

    def update_poll_status(self, account_id: str, *, error: str | None) -> None:
        """See ``Store.update_poll_status``."""
        self._update_account(
            _uuid(account_id, "account_id"),
            {
                "last_polled_at": datetime.now(UTC),
                "last_poll_status": "SUCCESS" if error is None else "FAILED",
                "last_poll_error": _error_text(error),
            },
        )

    # --- email poller: lease and checkpoint
    def claim_mailbox(self, account_id: str, mailbox: str, *, owner: str, lease_s: float) -> MailboxClaim:
        """See ``Store.claim_mailbox``."""
        result = self._call("bx_claim_mailbox", {
            "account_id": _uuid(account_id, "account_id"), "mailbox": clean_text(mailbox),
            "owner": owner, "lease_s": lease_s,
        })
        state = result.get("state")
        return MailboxClaim(outcome=result["outcome"], state=_sync_state(state) if state else None)

    def renew_mailbox_lease(self, account_id: str, mailbox: str, *, owner: str, lease_s: float) -> bool:
        """See ``Store.renew_mailbox_lease``."""
        return bool(self._call("bx_renew_mailbox_lease", {
            "account_id": _uuid(account_id, "account_id"), "mailbox": clean_text(mailbox),
            "owner": owner, "lease_s": lease_s,
        }))

    def release_mailbox(self, account_id: str, mailbox: str, *, owner: str, error: str | None = None) -> bool:
        """See ``Store.release_mailbox``."""
        return bool(self._call("bx_release_mailbox", {
            "account_id": _uuid(account_id, "account_id"), "mailbox": clean_text(mailbox),
            "owner": owner, "error": _error_text(error),
        }))

    def advance_checkpoint(
        self,
        account_id: str,
        mailbox: str,
        *,
        owner: str,
        uidvalidity: int,
        last_uid: int,
        highest_modseq: int | None = None,
    ) -> bool:
        """See ``Store.advance_checkpoint``."""
        return bool(self._call("bx_advance_checkpoint", {
            "account_id": _uuid(account_id, "account_id"), "mailbox": clean_text(mailbox), "owner": owner,
            "uidvalidity": int(uidvalidity), "last_uid": int(last_uid), "highest_modseq": highest_modseq,
        }))

    # --- email poller: ingestion
    def record_email(self, email: InboundEmail) -> IngestResult:
        """See ``Store.record_email``."""
        message_id = clean_text(email.message_id, COLUMN_LIMITS["external_id"])
        if not message_id or not message_id.strip():
            raise InvalidRecord("message_id is required (synthesise a deterministic one when missing)")
        payload = clean_json({
            "account_id": _uuid(email.account_id, "account_id"),
            "mailbox": email.mailbox,
            "uidvalidity": int(email.uidvalidity),
            "uid": int(email.uid),
            "message_id": message_id,
            "from_address": clean_text(email.from_address, COLUMN_LIMITS["from_address"]),
            "from_name": clean_text(email.from_name, COLUMN_LIMITS["from_name"]),
            "subject": clean_text(email.subject, COLUMN_LIMITS["subject"]),
            "content": email.content or "",
            "html_content": email.html_content,
            "to_addresses": list(email.to_addresses),
            "cc_addresses": list(email.cc_addresses),
            "in_reply_to": clean_text(email.in_reply_to, COLUMN_LIMITS["external_thread_id"]),
            "references": [clean_text(ref, COLUMN_LIMITS["external_id"]) for ref in email.references],
            "sent_at": _iso(email.sent_at),
            "attachments": list(email.attachments),
            "raw_sha256": email.raw_sha256,
        })
        result = self._call("bx_record_inbound_email", payload)
        return IngestResult(
            created=bool(result["created"]), status=result["status"],
            message_row_id=str(result["message_row_id"]), thread_id=str(result["thread_id"]),
            customer_id=str(result["customer_id"]) if result.get("customer_id") else None,
            new_thread=bool(result.get("new_thread")),
        )

    def record_email_failure(
        self,
        *,
        account_id: str,
        mailbox: str,
        uidvalidity: int,
        uid: int,
        reason: str,
        skipped: bool,
        message_id: str | None = None,
        raw_sha256: str | None = None,
    ) -> IngestFailure:
        """See ``Store.record_email_failure``."""
        result = self._call("bx_record_email_failure", clean_json({
            "account_id": _uuid(account_id, "account_id"), "mailbox": mailbox,
            "uidvalidity": int(uidvalidity), "uid": int(uid),
            "message_id": clean_text(message_id, COLUMN_LIMITS["external_id"]), "raw_sha256": raw_sha256,
            "status": "skipped" if skipped else "failed", "reason": _error_text(reason),
        }))
        return IngestFailure(status=result["status"], attempts=int(result["attempts"]))

    # --- WhatsApp
    def claim_send(self, message_id: str, *, owner: str, claim_s: float, channel: str = "WHATSAPP") -> SendClaim:
        """See ``Store.claim_send``."""
        return _dispatch(self._call("bx_claim_send", {
            "message_id": _uuid(message_id, "message_id"), "owner": owner, "claim_s": claim_s,
            "channel": channel,
        }))

    def complete_send(
        self, message_id: str, *, provider_sid: str, provider_response: Mapping[str, Any] | None = None
    ) -> DispatchResult:
        """See ``Store.complete_send``."""
        if not provider_sid:
            raise InvalidRecord("provider_sid is required to record a sent message")
        return _dispatch(self._call("bx_complete_send", clean_json({
            "message_id": _uuid(message_id, "message_id"),
            "provider_sid": clean_text(provider_sid, COLUMN_LIMITS["external_id"]),
            "provider_response": dict(provider_response) if provider_response is not None else None,
        })))

    def fail_send(
        self, message_id: str, *, error: str, provider_response: Mapping[str, Any] | None = None
    ) -> DispatchResult:
        """See ``Store.fail_send``."""
        return _dispatch(self._call("bx_fail_send", clean_json({
            "message_id": _uuid(message_id, "message_id"), "error": _error_text(error),
            "provider_response": dict(provider_response) if provider_response is not None else None,
        })))

    def release_send(self, message_id: str, *, owner: str, error: str) -> bool:
        """See ``Store.release_send``."""
        return bool(self._call("bx_release_send", {
            "message_id": _uuid(message_id, "message_id"), "owner": owner, "error": _error_text(error),
        }))

    def mark_send_unknown(self, message_id: str, *, error: str) -> bool:
        """See ``Store.mark_send_unknown``."""
        return bool(self._call("bx_mark_send_unknown", {
            "message_id": _uuid(message_id, "message_id"), "error": _error_text(error),
        }))

    def list_sends_needing_reconciliation(self, *, limit: int = 100) -> list[PendingSend]:
        """See ``Store.list_sends_needing_reconciliation``."""
        rows = self._call("bx_list_sends_needing_reconciliation", {"limit": int(limit)})
        return [
            PendingSend(
                message_id=str(row["message_id"]), channel=row["channel"], provider_sid=row.get("provider_sid"),
                attempts=int(row.get("attempts") or 0), claimed_at=_dt(row.get("claimed_at")),
                last_error=row.get("last_error"),
            )
            for row in rows
        ]

    def resolve_send(
        self,
        message_id: str,
        *,
        resolution: Literal["sent", "failed", "not_sent"],
        provider_sid: str | None = None,
        error: str | None = None,
    ) -> DispatchResult:
        """See ``Store.resolve_send``."""
        if resolution not in ("sent", "failed", "not_sent"):
            raise InvalidRecord(f"unknown resolution {resolution!r}")
        if resolution == "sent" and not provider_sid:
            raise InvalidRecord("provider_sid is required to resolve a send as sent")
        return _dispatch(self._call("bx_resolve_send", clean_json({
            "message_id": _uuid(message_id, "message_id"), "resolution": resolution,
            "provider_sid": clean_text(provider_sid, COLUMN_LIMITS["external_id"]),
            "error": _error_text(error or ("resolved as failed" if resolution == "failed" else None)),
        })))

    def apply_delivery_status(
        self, provider_sid: str, status: DeliveryStatus, *, reason: str | None = None, at: datetime | None = None
    ) -> DeliveryUpdate:
        """See ``Store.apply_delivery_status``."""
        status = _delivery_status(status)
        result = self._call("bx_apply_delivery_status", clean_json({
            "provider_sid": clean_text(provider_sid, COLUMN_LIMITS["external_id"]), "status": status.value,
            "reason": _error_text(reason), "at": _iso(at),
        }))
        return _delivery_update(result)

    def apply_delivery_status_for_message(
        self,
        message_id: str,
        status: DeliveryStatus,
        *,
        provider_sid: str | None = None,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> DeliveryUpdate:
        """See ``Store.apply_delivery_status_for_message``."""
        status = _delivery_status(status)
        result = self._call("bx_apply_delivery_status_by_message", clean_json({
            "message_id": _uuid(message_id, "message_id"), "status": status.value,
            "provider_sid": clean_text(provider_sid, COLUMN_LIMITS["external_id"]) or None,
            "reason": _error_text(reason), "at": _iso(at),
        }))
        return _delivery_update(result)

    # --- transcription
    def start_transcription(self, message_id: str, *, owner: str, lease_s: float) -> TranscriptionStart:
        """See ``Store.start_transcription``."""
        result = self._call("bx_start_transcription", {
            "message_id": _uuid(message_id, "message_id"), "owner": owner, "lease_s": lease_s,
        })
        return TranscriptionStart(
            outcome=TranscriptionOutcome(result["outcome"]),
            attempts=result.get("attempts"),
            lease_expires_at=_dt(result.get("lease_expires_at")),
        )

    def complete_transcription(
        self,
        message_id: str,
        *,
        text: str,
        language: str | None,
        confidence: float | None,
        details: Mapping[str, Any],
    ) -> TranscriptionOutcome:
        """See ``Store.complete_transcription``."""
        if confidence is not None:
            confidence = round(min(max(float(confidence), 0.0), 1.0), 2)
        result = self._call("bx_complete_transcription", clean_json({
            "message_id": _uuid(message_id, "message_id"), "text": text or "",
            "language": clean_text(language, COLUMN_LIMITS["transcription_language"]),
            "confidence": confidence, "transcription": dict(details),
        }))
        return TranscriptionOutcome(result["outcome"])

    def fail_transcription(self, message_id: str, *, error: str) -> TranscriptionOutcome:
        """See ``Store.fail_transcription``."""
        result = self._call("bx_fail_transcription", {
            "message_id": _uuid(message_id, "message_id"), "error": _error_text(error),
        })
        return TranscriptionOutcome(result["outcome"])

    def release_transcription(self, message_id: str, *, owner: str) -> TranscriptionOutcome:
        """See ``Store.release_transcription``."""
        result = self._call("bx_release_transcription", {
            "message_id": _uuid(message_id, "message_id"), "owner": owner,
        })
        return TranscriptionOutcome(result["outcome"])

