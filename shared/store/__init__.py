"""Database access for the workers: one ``Store`` contract, two backends, chosen by the settings.

``DATABASE_URL`` set → ``PostgresStore`` (psycopg); else ``SUPABASE_URL`` + ``SUPABASE_SERVICE_ROLE_KEY`` →
``SupabaseStore``. Building a store opens no connection; the first call does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.store.errors import (
    InvalidRecord,
    PasswordNotDecryptable,
    StoreConfigurationError,
    StoreError,
    StoreUnavailable,
)
from shared.store.interface import Store
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

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = [
    "DeliveryStatus",
    "DeliveryUpdate",
    "DispatchResult",
    "EmailAccount",
    "InboundEmail",
    "IngestFailure",
    "IngestResult",
    "InvalidRecord",
    "MailboxClaim",
    "PasswordNotDecryptable",
    "PendingSend",
    "PollableAccount",
    "SendClaim",
    "SendOutcome",
    "Store",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailable",
    "SyncState",
    "TranscriptionOutcome",
    "TranscriptionStart",
    "build_store",
]


def build_store(settings: Settings) -> Store:
    """The store the settings choose; raises ``ConfigurationError`` naming the missing or bad variable."""
    if settings.store_backend == "postgres":
        from shared.store.postgres import PostgresStore

        assert settings.database_url is not None
        return PostgresStore(
            settings.database_url.get_secret_value(),
            pool_max_size=settings.database_pool_max_size,
            connect_timeout_s=settings.database_connect_timeout_s,
        )
    from shared.store.supabase import SupabaseStore

    assert settings.supabase_url is not None
    assert settings.supabase_service_role_key is not None
    return SupabaseStore(
        settings.supabase_url,
        settings.supabase_service_role_key.get_secret_value(),
        timeout_s=settings.database_connect_timeout_s,
    )
