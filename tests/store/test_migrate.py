"""Migrations: idempotent on the baseline, additive on a database that already has the extra columns."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from shared.store.migrate import MIGRATIONS_TABLE, MigrationError, apply_schema, main, schema_files


def test_migrations_apply_twice_without_error(database_url: str) -> None:
    assert apply_schema(database_url, baseline=True) == []  # the template already recorded everything
    first = apply_schema(database_url, baseline=True, reapply=True)
    second = apply_schema(database_url, baseline=True, reapply=True)
    assert first == second
    assert any(name.startswith("migrations/") for name in first)


def test_migrations_apply_on_a_database_that_already_has_the_extra_columns(make_database: Any) -> None:
    url = make_database(template=False)
    with psycopg.connect(url, autocommit=True) as conn:
        for schema_file in schema_files(baseline=True):
            if schema_file.name.startswith("baseline/"):
                conn.execute(schema_file.sql.encode("utf-8"))
        conn.execute("ALTER TABLE communication_messages ADD COLUMN metadata jsonb,"
                     " ADD COLUMN updated_at timestamptz, ADD COLUMN error_message text")
    applied = apply_schema(url)
    assert applied
    assert all(name.startswith("migrations/") for name in applied)
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename IN"
                              " ('email_sync_state', 'email_ingest_log', 'outbound_dispatch') AND rowsecurity"
                              ).fetchone()
        assert tables == (3,)


def test_a_changed_migration_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {MIGRATIONS_TABLE} SET checksum = 'x' WHERE name = 'migrations/0001_message_columns.sql'")  # noqa: S608
    with pytest.raises(MigrationError, match="0001_message_columns"):
        apply_schema(database_url)


def test_command_line_needs_database_url(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main([]) == 2
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["--baseline"]) == 0


def test_no_bx_function_is_executable_by_public(db: psycopg.Connection[dict[str, Any]]) -> None:
    open_to_public = db.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND p.proname LIKE 'bx\\_%'"
        " AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))"
    ).fetchall()
    assert open_to_public == []
