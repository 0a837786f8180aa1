"""Fixtures for the store contract suite: one ``store`` fixture parametrized over both backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.store.base import RpcStore
from shared.store.postgres import PostgresStore
from shared.store.supabase import SupabaseStore
from tests.support.postgrest import PostgrestStandIn

SERVICE_ROLE_KEY = "test-service-role-key"


@pytest.fixture
def postgrest(database_url: str) -> Iterator[PostgrestStandIn]:
    """A PostgREST stand-in over the test's database."""
    stand_in = PostgrestStandIn(database_url, service_role_key=SERVICE_ROLE_KEY).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(params=["postgres", "supabase"])
def store(request: pytest.FixtureRequest, database_url: str) -> Iterator[RpcStore]:
    """The store under test, on a fresh migrated database."""
    built: RpcStore
    if request.param == "postgres":
        built = PostgresStore(database_url, pool_max_size=4, connect_timeout_s=5)
    else:
        built = SupabaseStore(request.getfixturevalue("postgrest").url, SERVICE_ROLE_KEY, timeout_s=15)
    yield built
    built.close()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A direct connection to the test database for seeding and assertions."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def make_account(db: psycopg.Connection[dict[str, Any]]) -> Callable[..., str]:
    """Factory: an email account whose IMAP password is encrypted with ``key``; returns its id."""
    counter = iter(range(1, 10_000))

    def make(*, password: str = "imap-secret", key: str = "current-key", name: str | None = None,  # noqa: S107
             active: bool = True, imap_enabled: bool = True, default_tags: list[str] | None = None,
             auto_assign_to: str | None = None, poll_interval_ms: int = 30_000) -> str:
        n = next(counter)
        row = db.execute(
            "INSERT INTO email_accounts (name, email, smtp_user, smtp_pass_encrypted, imap_user,"
            " imap_pass_encrypted, is_active, imap_enabled, default_tags, auto_assign_to, poll_interval_ms)"
            " VALUES (%s, %s, %s, encrypt_email_password('x', %s), %s, encrypt_email_password(%s, %s),"
            " %s, %s, %s, %s, %s) RETURNING id",
            [name or f"Inbox {n:04d}", f"inbox{n}@banxway.test", f"inbox{n}", key, f"inbox{n}", password, key,
             active, imap_enabled, default_tags or [], auto_assign_to, poll_interval_ms],
        ).fetchone()
        assert row is not None
        return str(row["id"])

    return make


@pytest.fixture
def make_message(db: psycopg.Connection[dict[str, Any]]) -> Callable[..., str]:
    """Factory: a thread and one message row (WhatsApp outbound by default); returns the message id."""

    def make(*, channel: str = "WHATSAPP", direction: str = "OUTBOUND", status: str = "PENDING",
             content: str = "hello", metadata: dict[str, Any] | None = None,
             transcription_status: str = "PENDING", external_id: str | None = None) -> str:
        thread = db.execute(
            "INSERT INTO communication_threads (reference, type, primary_channel)"
            " VALUES ('BX-1999-' || (1000 + floor(random() * 9000))::int || '-' || gen_random_uuid(), 'QUERY', %s)"
            " RETURNING id",
            [channel],
        ).fetchone()
        assert thread is not None
        row = db.execute(
            "INSERT INTO communication_messages (thread_id, channel, direction, status, content, metadata,"
            " transcription_status, external_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [thread["id"], channel, direction, status, content, psycopg.types.json.Jsonb(metadata or {}),
             transcription_status, external_id],
        ).fetchone()
        assert row is not None
        return str(row["id"])

    return make
