"""Store errors, classified by what happens to the job next (see ``shared.errors``).

``classify_sqlstate`` maps a PostgreSQL SQLSTATE (or a PostgREST ``PGRST`` code) to one of them, so both
backends agree on what is transient and what an operator must fix.
"""

from __future__ import annotations

from shared.errors import ConfigurationError, Reject, RetryLater, WorkerError

__all__ = [
    "InvalidRecord",
    "PasswordNotDecryptable",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailable",
    "classify_sqlstate",
]


class StoreError(WorkerError):
    """An unexpected database error (a bug or a schema mismatch): it propagates to the host's retries."""

    code = "store_error"


class StoreUnavailable(RetryLater):
    """The database is unreachable or the statement hit a transient condition; try the job again later."""

    code = "store_unavailable"


class StoreConfigurationError(ConfigurationError):
    """DATABASE_URL / SUPABASE_* are wrong (bad credentials, unknown database, schema not migrated)."""

    code = "store_configuration_error"


class InvalidRecord(Reject):
    """The values given to the store can never be stored (not a UUID, unknown status, missing Message-ID)."""

    code = "invalid_record"


class PasswordNotDecryptable(Reject):
    """No configured key decrypts an account's stored IMAP password (the account, not the job, needs fixing)."""

    code = "password_not_decryptable"


# SQLSTATE classes / codes that are worth retrying: connection problems, resources, serialization, locks,
# operator intervention (admin shutdown, cancelled statement) and races on unique keys inside our functions.
_TRANSIENT_PREFIXES = ("08", "53", "40", "57", "55P03", "58", "23505", "PGRST000", "PGRST001", "PGRST002",
                       "PGRST003")
_CONFIG_PREFIXES = ("28", "3D000", "42501", "42883", "42P01", "PGRST202", "PGRST205", "PGRST301", "PGRST302")
_INVALID_PREFIXES = ("22", "P0002")


def classify_sqlstate(sqlstate: str | None, message: str, *, config_hint: str) -> WorkerError:
    """Return the store error for a database error code; ``config_hint`` names the settings to check."""
    state = sqlstate or ""
    detail = f"{message} (SQLSTATE {state})" if state else message
    if state.startswith(_TRANSIENT_PREFIXES):
        return StoreUnavailable(f"database temporarily unavailable: {detail}")
    if state.startswith(("42883", "42P01", "PGRST202", "PGRST205")):
        return StoreConfigurationError(
            f"database schema is not migrated ({detail}); run `python -m shared.store.migrate`"
        )
    if state.startswith(_CONFIG_PREFIXES):
        return StoreConfigurationError(f"database rejected our credentials or privileges: {detail}; "
                                       f"check {config_hint}")
    if state.startswith(_INVALID_PREFIXES):
        return InvalidRecord(f"value rejected by the database: {detail}")
    return StoreError(f"unexpected database error: {detail}")
