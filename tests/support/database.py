"""pytest plugin: a migrated template database once per session, a fresh clone of it for each test.

Connection info comes only from env ``DATABASE_URL`` — an admin DSN to a server where tests may create
databases. Without it, tests that need a database fail when ``CI`` is set and skip loudly otherwise.

Fixtures:
- ``store_template_db`` (session): name of the template, built with ``--baseline`` migrations;
- ``database_url``: a ``postgresql://`` URL to a fresh database cloned from the template (dropped afterwards);
- ``make_database``: factory for extra fresh databases (``make_database(template=False)`` gives an empty one).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from shared.store.migrate import apply_schema

__all__ = ["admin_dsn", "database_dsn", "database_url", "make_database", "store_template_db"]


def admin_dsn() -> str:
    """The admin DSN from env DATABASE_URL (fails in CI, skips loudly elsewhere when missing)."""
    dsn = os.environ.get("DATABASE_URL", "").strip()
    if not dsn:
        reason = "DATABASE_URL is not set: PostgreSQL tests need an admin DSN (scripts/services.sh writes one)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return dsn


def database_dsn(admin: str, name: str) -> str:
    """The admin DSN pointed at database ``name`` (a URL stays a URL)."""
    parts = urlsplit(admin)
    if parts.scheme in ("postgres", "postgresql"):
        return urlunsplit(parts._replace(path=f"/{name}"))
    return psycopg.conninfo.make_conninfo(admin, dbname=name)


def _create(admin: str, name: str, template: str | None) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                         sql.Identifier(template)))


def _drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def store_template_db() -> Iterator[str]:
    """A database with the baseline and all migrations applied, used as the template for each test."""
    admin = admin_dsn()
    name = f"bx_template_{uuid.uuid4().hex[:12]}"
    _create(admin, name, None)
    try:
        apply_schema(database_dsn(admin, name), baseline=True)
        yield name
    finally:
        _drop(admin, name)


@pytest.fixture
def make_database(store_template_db: str) -> Iterator[Callable[..., str]]:
    """Factory: ``make_database()`` → URL of a fresh migrated database; ``template=False`` → an empty one."""
    admin = admin_dsn()
    created: list[str] = []

    def make(*, template: bool = True) -> str:
        name = f"bx_test_{uuid.uuid4().hex[:12]}"
        _create(admin, name, store_template_db if template else None)
        created.append(name)
        return database_dsn(admin, name)

    yield make
    for name in created:
        _drop(admin, name)


@pytest.fixture
def database_url(make_database: Callable[..., str]) -> str:
    """URL of a fresh database cloned from the migrated template, dropped after the test."""
    return make_database()
