"""The store contract the three workers use. Both backends (``postgres``, ``supabase``) implement it and pass
the same contract tests (tests/store/).

Every method is one round trip and one transaction where atomicity matters. Errors: ``StoreUnavailable``
(retry later), ``StoreConfigurationError`` (fix a setting), ``InvalidRecord`` (reject), ``StoreError``
(unexpected; propagates) — see ``shared.store.errors``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

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
    TranscriptionOutcome,
    TranscriptionStart,
)

__all__ = ["Store"]


class Store(Protocol):
    """Database operations of the workers (email poller, WhatsApp processor, transcription worker)."""

    # --- lifecycle
    def ping(self) -> None:
        """One cheap round trip; raises a store error when the database cannot answer."""

    def close(self) -> None:
        """Release connections (idempotent)."""

    # --- email poller: accounts
    def list_pollable_accounts(self, *, mailbox: str = "INBOX") -> list[PollableAccount]:
        """Active, IMAP-enabled accounts with poll interval, last poll and the mailbox lease, by name."""

    def get_email_account(self, account_id: str, *, keys: Sequence[str]) -> EmailAccount | None:
        """The account with its IMAP password decrypted by ``decrypt_email_password(encrypted, key)``,
        trying ``keys`` in order. None when the account does not exist. Raises ``PasswordNotDecryptable``
        when no key works."""

    def update_poll_status(self, account_id: str, *, error: str | None) -> None:
        """Set ``last_polled_at`` = now, ``last_poll_status`` SUCCESS (error None) or FAILED with the error."""

    # --- email poller: mailbox lease and checkpoint (email_sync_state)
    def claim_mailbox(self, account_id: str, mailbox: str, *, owner: str, lease_s: float) -> MailboxClaim:
        """Take the mailbox lease when free or expired (or already ours); returns the checkpoint."""

    def renew_mailbox_lease(self, account_id: str, mailbox: str, *, owner: str, lease_s: float) -> bool:
        """Extend our lease; False when another owner took it (stop polling)."""

    def release_mailbox(self, account_id: str, mailbox: str, *, owner: str, error: str | None = None) -> bool:
        """Give the lease back and record the run (success resets the failure count)."""

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
        """Move the checkpoint (never backwards within one UIDVALIDITY; a new UIDVALIDITY resets it).
        False when we no longer hold the lease."""

    # --- email poller: ingestion
    def record_email(self, email: InboundEmail) -> IngestResult:
        """Store one email atomically (customer, thread, message, counters, ingest log); a second call with
        the same Message-ID stores nothing and returns ``created=False`` with the existing row."""

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
        """Record a message that failed (retried on a later poll) or was skipped (never again); returns the
        try count so the poller can give up after a bound."""

    # --- WhatsApp: send claims (outbound_dispatch) and message rows
    def claim_send(self, message_id: str, *, owner: str, claim_s: float, channel: str = "WHATSAPP") -> SendClaim:
        """Claim a send before calling the provider; only ``CLAIMED`` allows the call. A sent message gives
        ``ALREADY_SENT``; a stale claim becomes ``NEEDS_RECONCILIATION``; a missing row ``MISSING``."""

    def complete_send(
        self, message_id: str, *, provider_sid: str, provider_response: Mapping[str, Any] | None = None
    ) -> DispatchResult:
        """Record success: dispatch ``sent``; message status SENT (never downgrading DELIVERED/READ),
        ``external_id`` = sid, ``sent_at`` = now, ``error_message``/``failed_at`` cleared."""

    def fail_send(
        self, message_id: str, *, error: str, provider_response: Mapping[str, Any] | None = None
    ) -> DispatchResult:
        """Record a permanent failure: message FAILED with ``error_message``/``failed_at``."""

    def release_send(self, message_id: str, *, owner: str, error: str) -> bool:
        """Give back our claim after an attempt that provably did not send (429, refused connection)."""

    def mark_send_unknown(self, message_id: str, *, error: str) -> bool:
        """Mark an ambiguous outcome (timeout after sending): needs reconciliation, never re-sent blindly."""

    def list_sends_needing_reconciliation(self, *, limit: int = 100) -> list[PendingSend]:
        """Sends with unknown outcome (stale claims are converted first), oldest first."""

    def resolve_send(
        self,
        message_id: str,
        *,
        resolution: Literal["sent", "failed", "not_sent"],
        provider_sid: str | None = None,
        error: str | None = None,
    ) -> DispatchResult:
        """Settle a send needing reconciliation: as sent, as failed, or released for another attempt."""

    def apply_delivery_status(
        self, provider_sid: str, status: DeliveryStatus, *, reason: str | None = None, at: datetime | None = None
    ) -> DeliveryUpdate:
        """Apply a delivery report by provider sid, monotonically (SENT < DELIVERED < READ; FAILED with the
        reason never overrides DELIVERED/READ)."""

    def apply_delivery_status_for_message(
        self,
        message_id: str,
        status: DeliveryStatus,
        *,
        provider_sid: str | None = None,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> DeliveryUpdate:
        """Apply a delivery report by our message id (the provider echoes it in ``custom_data``), for a report
        that arrives before the send's sid was recorded. Same order as ``apply_delivery_status``; also records
        ``provider_sid`` as ``external_id`` when none is set yet, and remembers the report on the send's claim so
        a later ``complete_send`` keeps a FAILED. ``not_found`` when there is no outbound WhatsApp message with
        that id, or its recorded sid differs from ``provider_sid``."""

    # --- transcription
    def start_transcription(self, message_id: str, *, owner: str, lease_s: float) -> TranscriptionStart:
        """IN_PROGRESS with a lease in ``metadata.transcription.workerLease``; ``ALREADY_COMPLETED`` and
        ``IN_PROGRESS`` (another live lease) mean: do no work."""

    def complete_transcription(
        self,
        message_id: str,
        *,
        text: str,
        language: str | None,
        confidence: float | None,
        details: Mapping[str, Any],
    ) -> TranscriptionOutcome:
        """COMPLETED: ``content`` = transcript, language/confidence set, ``details`` (segments, duration ...)
        merged into ``metadata.transcription``; the previous content kept as ``metadata.call.summary``."""

    def fail_transcription(self, message_id: str, *, error: str) -> TranscriptionOutcome:
        """FAILED with ``metadata.transcription.error``/``failedAt``; other metadata keys untouched."""

    def release_transcription(self, message_id: str, *, owner: str) -> TranscriptionOutcome:
        """Give back ``owner``'s lease (the row stays IN_PROGRESS) so a retry can claim it at once: ``RELEASED``
        (also when no lease was held); ``IN_PROGRESS`` when another owner holds it (left alone)."""
