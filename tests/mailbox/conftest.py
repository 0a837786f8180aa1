"""Fixtures for the poller's integration tests: a fresh migrated database, Dovecot users wired to
``email_accounts`` rows, a unique attachments container on Azurite, and a poller factory."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from psycopg.rows import dict_row

from shared.mailbox.attachments import AttachmentStore
from shared.mailbox.imap import ImapConnector
from shared.mailbox.poller import MailboxPoller, PollConfig
from shared.store.postgres import PostgresStore
from tests.support.services import ImapAccount, ImapService

KEY = "current-test-key"
LEGACY_KEY = "legacy-test-key"


@pytest.fixture
def pg_store(database_url: str) -> Iterator[PostgresStore]:
    """The direct-Postgres store on a fresh migrated database."""
    store = PostgresStore(database_url, pool_max_size=4, connect_timeout_s=5)
    yield store
    store.close()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A direct connection for seeding and assertions."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def make_email_account(
    db: psycopg.Connection[dict[str, Any]], imap_service: ImapService
) -> Callable[..., str]:
    """Factory: an ``email_accounts`` row for an IMAP user on the local Dovecot (IMAPS); returns its id."""

    def make(imap: ImapAccount, *, key: str = KEY, password: str | None = None, port: int | None = None,
             default_tags: list[str] | None = None, auto_assign_to: str | None = None,
             poll_interval_ms: int = 30_000, active: bool = True) -> str:
        n = uuid.uuid4().hex[:8]
        row = db.execute(
            "INSERT INTO email_accounts (name, email, smtp_user, smtp_pass_encrypted, imap_host, imap_port,"
            " imap_user, imap_pass_encrypted, imap_tls, imap_enabled, is_active, default_tags, auto_assign_to,"
            " poll_interval_ms) VALUES (%s, %s, %s, encrypt_email_password('x', %s), %s, %s, %s,"
            " encrypt_email_password(%s, %s), true, true, %s, %s, %s, %s) RETURNING id",
            [f"Inbox {n}", f"inbox-{n}@banxway.test", imap.user, key, imap_service.host,
             port or imap_service.imaps_port, imap.user, password or imap.password, key, active,
             default_tags or [], auto_assign_to, poll_interval_ms],
        ).fetchone()
        assert row is not None
        return str(row["id"])

    return make


@pytest.fixture
def attachments_container(blob_service: BlobServiceClient) -> Iterator[str]:
    """A unique container name, deleted after the test."""
    name = f"att-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(ResourceNotFoundError):  # the test may never have created it
        blob_service.delete_container(name)


@pytest.fixture
def make_poller(
    pg_store: PostgresStore,
    imap_service: ImapService,
    blob_service: BlobServiceClient,
    attachments_container: str,
    redis_client: redis.Redis,
) -> Callable[..., MailboxPoller]:
    """Factory: a poller on the test's store, Dovecot (verified TLS), Azurite and Redis."""

    def make(*, store: Any = None, owner: str | None = None, connector: ImapConnector | None = None,
             **config: Any) -> MailboxPoller:
        values: dict[str, Any] = {"keys": (KEY, LEGACY_KEY), "chunk_size": 10, "max_tries_per_message": 3,
                                  "events_channel": "test:messages:created"}
        values.update(config)
        return MailboxPoller(
            store=store or pg_store,
            connector=connector or ImapConnector(ca_file=imap_service.ca_file, timeout_s=5.0, connect_timeout_s=2.0),
            attachments=AttachmentStore(blob_service, attachments_container),
            config=PollConfig(**values),
            redis=redis_client,
            owner=owner,
        )

    return make
