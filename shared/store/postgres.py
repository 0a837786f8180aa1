"""Store backend on direct PostgreSQL (psycopg 3 + psycopg_pool): the live Azure PostgreSQL and local runs.

The pool is sized for serverless: no connections kept open at start (``min_size=0``), a small maximum, opened
on first use (never at import or construction), idle connections closed after ``max_idle_s``, and each
connection checked before it is handed out (Azure closes idle ones). Connections run in autocommit: every
atomic step is one statement calling a ``bx_*`` SQL function. jsonb values are adapted with ``Jsonb`` so
Python lists stay JSON arrays (the original's driver turned them into Postgres array literals).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.store.base import ACCOUNT_COLUMNS, RpcStore
from shared.store.errors import StoreConfigurationError, StoreUnavailable, classify_sqlstate

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

_CONFIG_HINT = "DATABASE_URL"
# libpq reports these at connect time without a SQLSTATE; they need an operator, not a retry.
_CONFIG_MESSAGES = ("password authentication failed", "does not exist", "no pg_hba.conf entry",
                    "authentication failed", "invalid sslmode", "certificate")


def _where(conninfo: str) -> str:
    """``host:port/dbname`` of a DSN, for error messages (never the user's password)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "?"
    return f"{params.get('host', 'localhost')}:{params.get('port', '5432')}/{params.get('dbname', '')}"


class PostgresStore(RpcStore):
    """``Store`` over a psycopg connection pool."""

    config_hint = _CONFIG_HINT

    def __init__(
        self,
        conninfo: str,
        *,
        pool_max_size: int = 4,
        connect_timeout_s: float = 10.0,
        max_idle_s: float = 120.0,
        application_name: str = "banxway-workers",
    ) -> None:
        """Validate the DSN (raises ``StoreConfigurationError`` naming DATABASE_URL); open nothing yet."""
        try:
            conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError:
            raise StoreConfigurationError(
                "DATABASE_URL is not a valid PostgreSQL connection string or URL"
            ) from None
        if urlsplit(conninfo).scheme not in ("postgres", "postgresql", ""):
            raise StoreConfigurationError("DATABASE_URL must start with postgres:// or postgresql://")
        self._conninfo = conninfo
        self._pool_max_size = pool_max_size
        self._connect_timeout_s = connect_timeout_s
        self._max_idle_s = max_idle_s
        self._application_name = application_name
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    # --- pool
    def _get_pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                pool: ConnectionPool = ConnectionPool(
                    self._conninfo,
                    min_size=0,
                    max_size=self._pool_max_size,
                    open=False,
                    timeout=self._connect_timeout_s,
                    max_idle=self._max_idle_s,
                    reconnect_timeout=max(self._connect_timeout_s * 3, 30.0),
                    check=ConnectionPool.check_connection,
                    kwargs={
                        "autocommit": True,
                        "connect_timeout": max(1, math.ceil(self._connect_timeout_s)),
                        "application_name": self._application_name,
                    },
                    name="banxway-store",
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    def _diagnose_connect_failure(self) -> Exception:
        """The pool only says it timed out; one direct attempt tells us why."""
        where = _where(self._conninfo)
        try:
            with psycopg.connect(self._conninfo, connect_timeout=max(1, math.ceil(self._connect_timeout_s))):
                pass
        except psycopg.Error as exc:
            return self._connect_error(exc, where)
        return StoreUnavailable(
            f"no database connection free within {self._connect_timeout_s:g} s "
            f"(pool of {self._pool_max_size} to {where} busy)"
        )

    @staticmethod
    def _connect_error(exc: psycopg.Error, where: str) -> Exception:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if any(text in message for text in _CONFIG_MESSAGES):
            return StoreConfigurationError(f"DATABASE_URL rejected by {where}: {message}")
        return StoreUnavailable(f"cannot connect to the database at {where} (DATABASE_URL): {message}")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        pool = self._get_pool()
        try:
            with pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise self._diagnose_connect_failure() from exc
        except psycopg.Error as exc:
            if exc.sqlstate is None:
                raise StoreUnavailable(
                    f"database connection to {_where(self._conninfo)} failed: {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                ) from exc
            raise classify_sqlstate(
                exc.sqlstate, exc.diag.message_primary or type(exc).__name__, config_hint=_CONFIG_HINT
            ) from exc

    # --- primitives
    def _call(self, function: str, payload: Mapping[str, Any]) -> Any:
        query = sql.SQL("SELECT public.{}(%s)").format(sql.Identifier(function))
        with self._connection() as conn:
            row = conn.execute(query, [Jsonb(dict(payload))]).fetchone()
        return None if row is None else row[0]

    def _account_row(self, account_id: str) -> Mapping[str, Any] | None:
        query = sql.SQL("SELECT {} FROM public.email_accounts WHERE id = %s::uuid").format(
            sql.SQL(", ").join(sql.Identifier(column) for column in ACCOUNT_COLUMNS)
        )
        with self._connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            return cursor.execute(query, [account_id]).fetchone()

    def _decrypt(self, encrypted: str, key: str) -> str | None:
        with self._connection() as conn:
            try:
                row = conn.execute(
                    "SELECT public.decrypt_email_password(%s::text, %s::text)", [encrypted, key]
                ).fetchone()
            except (psycopg.errors.ExternalRoutineInvocationException, psycopg.DataError):
                return None  # wrong key or not our ciphertext: the caller tries the next key
        return None if row is None else row[0]

    def _update_account(self, account_id: str, values: Mapping[str, Any]) -> None:
        query = sql.SQL("UPDATE public.email_accounts SET {} WHERE id = %s::uuid").format(
            sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(column)) for column in values
            )
        )
        with self._connection() as conn:
            conn.execute(query, [*values.values(), account_id])

    def ping(self) -> None:
        """``SELECT 1`` through the pool."""
        with self._connection() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        """Close the pool (idempotent); the next call opens a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
