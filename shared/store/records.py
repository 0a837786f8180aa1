"""Rows and results the store returns, as small frozen dataclasses (no ORM objects leak out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "DeliveryStatus",
    "DeliveryUpdate",
    "DispatchResult",
    "EmailAccount",
    "InboundEmail",
    "IngestFailure",
    "IngestResult",
    "MailboxClaim",
    "PendingSend",
    "PollableAccount",
    "SendClaim",
    "SendOutcome",
    "SyncState",
    "TranscriptionOutcome",
    "TranscriptionStart",
]


@dataclass(frozen=True)
class PollableAccount:
    """An active, IMAP-enabled account as the timer fan-out sees it."""

    id: str
    name: str
    email: str
    poll_interval_ms: int | None
    last_polled_at: datetime | None
    last_poll_status: str | None
    #: The INBOX lease: set and in the future while a poller holds it.
    lease_expires_at: datetime | None
    leased: bool


@dataclass(frozen=True)
class EmailAccount:
    """An account with its decrypted IMAP password (never logged: ``repr`` leaves it out)."""

    id: str
    name: str
    email: str
    imap_host: str
    imap_port: int
    imap_user: str
    imap_tls: bool
    imap_enabled: bool
    is_active: bool
    poll_interval_ms: int | None
    default_tags: tuple[str, ...]
    auto_assign_to: str | None
    imap_password: str = field(repr=False)


@dataclass(frozen=True)
class SyncState:
    """The checkpoint and lease of one account's mailbox (``email_sync_state``)."""

    account_id: str
    mailbox: str
    uidvalidity: int | None
    last_uid: int
    highest_modseq: int | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    consecutive_failures: int
    last_success_at: datetime | None


@dataclass(frozen=True)
class MailboxClaim:
    """``won`` is True when this owner now holds the lease; ``state`` is None only for a missing account."""

    outcome: str  # "claimed" | "held" (someone else polls it) | "missing" (no such account)
    state: SyncState | None

    @property
    def won(self) -> bool:
        """Whether the caller holds the mailbox lease now."""
        return self.outcome == "claimed"


@dataclass(frozen=True)
class InboundEmail:
    """One parsed email to store. ``message_id`` is the Message-ID with angle brackets (synthesise a
    deterministic one when the header is missing; never empty). Addresses are ``{"address", "name"}`` dicts.
    Over-long values are truncated and NUL bytes stripped by the store."""

    account_id: str
    mailbox: str
    uidvalidity: int
    uid: int
    message_id: str
    from_address: str
    from_name: str | None = None
    subject: str | None = None
    content: str = ""
    html_content: str | None = None
    to_addresses: list[dict[str, Any]] = field(default_factory=list)
    cc_addresses: list[dict[str, Any]] = field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    sent_at: datetime | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    raw_sha256: str | None = None


@dataclass(frozen=True)
class IngestResult:
    """``created`` is True when this call stored a new message; otherwise it was a duplicate."""

    created: bool
    status: str  # "stored" | "duplicate"
    message_row_id: str
    thread_id: str
    customer_id: str | None
    new_thread: bool


@dataclass(frozen=True)
class IngestFailure:
    """The recorded state of a message that failed or was skipped, and how often that happened."""

    status: str  # "failed" | "skipped" (or "stored"/"duplicate" if it had been stored before)
    attempts: int


class SendOutcome(StrEnum):
    """What a claim, completion or failure of a send found."""

    CLAIMED = "claimed"  # we hold the claim: call the provider
    ALREADY_SENT = "already_sent"  # acknowledge without calling the provider
    IN_PROGRESS = "in_progress"  # another attempt holds a live claim: retry later
    NEEDS_RECONCILIATION = "needs_reconciliation"  # outcome unknown: never re-send blindly
    FAILED = "failed"  # permanently failed before (or now)
    MISSING = "missing"  # no communication_messages row with that id
    SENT = "sent"  # complete_send recorded the success
    NOT_CLAIMED = "not_claimed"  # complete/fail/resolve without a claim row
    RELEASED = "released"  # resolve_send(not_sent): it may be claimed again


@dataclass(frozen=True)
class SendClaim:
    """The result of ``claim_send``: only ``outcome == CLAIMED`` allows calling the provider."""

    outcome: SendOutcome
    attempts: int = 0
    provider_sid: str | None = None
    last_error: str | None = None
    claim_expires_at: datetime | None = None


DispatchResult = SendClaim


@dataclass(frozen=True)
class PendingSend:
    """A send whose outcome is unknown (a crashed or timed-out attempt), for operators or a reconciler."""

    message_id: str
    channel: str
    provider_sid: str | None
    attempts: int
    claimed_at: datetime | None
    last_error: str | None


class DeliveryStatus(StrEnum):
    """Delivery states in ``communication_messages.status`` order: SENT < DELIVERED < READ; FAILED apart."""

    SENT = "SENT"
    DELIVERED = "DELIVERED"
    READ = "READ"
    FAILED = "FAILED"


@dataclass(frozen=True)
class DeliveryUpdate:
    """``outcome``: "applied", "stale" (would move backwards; ignored) or "not_found" (unknown sid/message)."""

    outcome: str
    message_id: str | None
    status: str | None


class TranscriptionOutcome(StrEnum):
    """What a transcription state change found or did."""

    STARTED = "started"
    ALREADY_COMPLETED = "already_completed"
    IN_PROGRESS = "in_progress"  # another worker holds a live lease on it
    MISSING = "missing"
    COMPLETED = "completed"
    FAILED = "failed"
    RELEASED = "released"  # the caller's lease was given back (or it held none)


@dataclass(frozen=True)
class TranscriptionStart:
    """The result of ``start_transcription``: transcribe only when ``outcome == STARTED``."""

    outcome: TranscriptionOutcome
    attempts: int | None = None
    lease_expires_at: datetime | None = None
