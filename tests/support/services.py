"""Pytest plugin: fixtures for the real local services (Redis, PostgreSQL, Azurite, Dovecot).

Connection details come only from environment variables, as written by ``scripts/services.sh up`` into
``$SVC_DIR/env.sh`` (``scripts/test.sh`` does all of it). A missing variable or an unreachable service
fails the test loudly with the variable's name and how to start the services; nothing is skipped.

Isolation, so that several pytest sessions can share one set of services:

- Redis: each session claims its own logical database (1-15) on the server in ``REDIS_URL``;
  ``redis_url`` points at it and ``redis_client`` flushes it before and after each test.
- Azurite: ``unique_queue_name`` creates uniquely named queues and deletes them (and ``<name>-poison``).
- PostgreSQL: ``fresh_database_url`` creates a throwaway database per test from ``admin_database_url``.
- Dovecot: ``imap_account`` gives each test a throwaway user of its own (any name in
  ``IMAP_THROWAWAY_DOMAIN`` logs in with password ``secret``). The fixed users ``test@example.com``
  (``IMAP_USER``) and ``other@example.com`` (password ``secret``) are shared by every session;
  ``ImapService.reset_user`` empties one of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import (
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)
from imapclient import IMAPClient

__all__ = [
    "ImapAccount",
    "ImapService",
    "admin_database_url",
    "b64_queue_client",
    "blob_service",
    "fresh_database_url",
    "imap_account",
    "imap_service",
    "queue_service",
    "redis_client",
    "redis_url",
    "storage_connection_string",
    "unique_queue_name",
]

START_HINT = (
    'start the local services with `scripts/services.sh up && . "$(scripts/services.sh env)"`, '
    "or run the whole suite with `scripts/test.sh`"
)
_CONNECT_TIMEOUT_S = 5.0
_DOVEADM_TIMEOUT_S = 30.0
_THROWAWAY_PASSWORD = "secret"  # what the static passdb in scripts/services.sh accepts
_REDIS_CLAIM_PREFIX = "banxway:test:redis-db-claim:"
_REDIS_CLAIM_TTL_S = 2 * 3600
_REDIS_FIRST_DB = 1
_REDIS_LAST_DB = 15
# Atomic compare-and-set / compare-and-delete for the database claims of concurrent sessions.
_REPLACE_IF_EQUAL_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
_DELETE_IF_EQUAL_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _fail(message: str) -> NoReturn:
    pytest.fail(f"{message}; {START_HINT}", pytrace=False)


def _require_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        _fail(f"environment variable {name} is not set")
    return value


def _redacted(url: str) -> str:
    """Return ``url`` without its password, for failure messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


# --- Redis --------------------------------------------------------------------------------------


def _with_redis_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def _claim_owner_is_gone(owner: str) -> bool:
    """A claim written by a process on this host that no longer runs can be taken over."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not Path(f"/proc/{pid}").exists()


def _claim_redis_db(client: redis.Redis, owner: str) -> int:
    for db in range(_REDIS_FIRST_DB, _REDIS_LAST_DB + 1):
        key = f"{_REDIS_CLAIM_PREFIX}{db}"
        if client.set(key, owner, nx=True, ex=_REDIS_CLAIM_TTL_S):
            return db
        current = client.get(key)
        taken_over = (
            isinstance(current, bytes)
            and _claim_owner_is_gone(current.decode())
            and client.eval(_REPLACE_IF_EQUAL_LUA, 1, key, current, owner, _REDIS_CLAIM_TTL_S) == 1
        )
        if taken_over:
            return db
    pytest.fail(
        f"no free Redis database {_REDIS_FIRST_DB}-{_REDIS_LAST_DB}: other test sessions hold "
        f"keys {_REDIS_CLAIM_PREFIX}* on the REDIS_URL server",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis logical database that belongs to this test session alone.

    The server comes from ``REDIS_URL``; the session claims a free database 1-15 on it (a key in
    the URL's own database records the claim) so parallel sessions never flush each other's data.
    """
    base_url = _require_env("REDIS_URL")
    owner = f"{socket.gethostname()}:{os.getpid()}"
    client = redis.Redis.from_url(base_url, socket_connect_timeout=_CONNECT_TIMEOUT_S)
    try:
        try:
            client.ping()
        except redis.RedisError as exc:
            _fail(f"Redis at REDIS_URL={_redacted(base_url)} is unreachable ({exc})")
        db = _claim_redis_db(client, owner)
        yield _with_redis_db(base_url, db)
        client.eval(_DELETE_IF_EQUAL_LUA, 1, f"{_REDIS_CLAIM_PREFIX}{db}", owner)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client (bytes responses) on the session's own database, flushed before and after the test."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=_CONNECT_TIMEOUT_S)
    try:
        client.flushdb()
        yield client
        client.flushdb()
    finally:
        client.close()


# --- Azurite (queues, blobs) --------------------------------------------------------------------


@pytest.fixture(scope="session")
def storage_connection_string() -> str:
    """The ``AzureWebJobsStorage`` connection string, checked to reach a queue service."""
    conn_str = _require_env("AzureWebJobsStorage")
    try:
        with QueueServiceClient.from_connection_string(
            conn_str, retry_total=0, connection_timeout=_CONNECT_TIMEOUT_S
        ) as client:
            client.get_service_properties()
    except (AzureError, ValueError) as exc:
        _fail(f"the queue service in AzureWebJobsStorage is unreachable ({type(exc).__name__}: {exc})")
    return conn_str


@pytest.fixture(scope="session")
def queue_service(storage_connection_string: str) -> Iterator[QueueServiceClient]:
    """A session-wide ``QueueServiceClient`` for Azurite."""
    with QueueServiceClient.from_connection_string(storage_connection_string) as client:
        yield client


def b64_queue_client(service: QueueServiceClient, queue_name: str) -> QueueClient:
    """A client for ``queue_name`` that base64-encodes sent and decodes received text.

    This matches host.json's ``messageEncoding: base64``, i.e. what a queue trigger would see.
    """
    return service.get_queue_client(
        queue_name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )


@pytest.fixture
def unique_queue_name(queue_service: QueueServiceClient) -> Iterator[Callable[..., str]]:
    """Factory: ``unique_queue_name(prefix="q")`` creates a fresh queue and returns its name.

    Every queue it created, and the matching ``<name>-poison`` queue, is deleted after the test.
    """
    created: list[str] = []

    def make(prefix: str = "q") -> str:
        name = f"{prefix.lower().strip('-')}-{uuid.uuid4().hex[:12]}"
        queue_service.create_queue(name)
        created.append(name)
        return name

    yield make
    for name in created:
        for queue in (name, f"{name}-poison"):
            with contextlib.suppress(ResourceNotFoundError):
                queue_service.delete_queue(queue)


@pytest.fixture(scope="session")
def blob_service(storage_connection_string: str) -> Iterator[BlobServiceClient]:
    """A session-wide ``BlobServiceClient`` for Azurite (fails loudly when blob is not served)."""
    try:
        with BlobServiceClient.from_connection_string(
            storage_connection_string, retry_total=0, connection_timeout=_CONNECT_TIMEOUT_S
        ) as probe:
            probe.get_service_properties()
    except (AzureError, ValueError) as exc:
        _fail(f"the blob service in AzureWebJobsStorage is unreachable ({type(exc).__name__}: {exc})")
    with BlobServiceClient.from_connection_string(storage_connection_string) as client:
        yield client


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def admin_database_url() -> str:
    """``DATABASE_URL``: a DSN whose role may create and drop databases; checked with ``select 1``."""
    url = _require_env("DATABASE_URL")
    try:
        with psycopg.connect(url, connect_timeout=int(_CONNECT_TIMEOUT_S)) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        _fail(f"PostgreSQL at DATABASE_URL={_redacted(url)} is unreachable ({exc})")
    return url


@pytest.fixture
def fresh_database_url(admin_database_url: str) -> Iterator[str]:
    """URL of an empty database created for this test and dropped (``WITH (FORCE)``) after it."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_database_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    parts = urlsplit(admin_database_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(admin_database_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


# --- Dovecot (IMAP) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImapAccount:
    """Credentials of one IMAP mailbox user."""

    user: str
    password: str


@dataclass(frozen=True)
class ImapService:
    """The IMAP server from the environment, plus Dovecot admin helpers for seeding.

    ``host``/``port`` is plain IMAP, ``imaps_port`` is IMAP over TLS with a certificate that
    ``ca_file`` verifies. The helpers call ``doveadm -c dovecot_conf`` and therefore need the local
    Dovecot from ``scripts/services.sh`` (they fail loudly when ``DOVECOT_CONF`` is not set).
    """

    host: str
    port: int
    imaps_port: int
    user: str
    password: str
    ca_file: str | None
    dovecot_conf: str | None
    throwaway_domain: str | None = None

    @property
    def account(self) -> ImapAccount:
        """The fixed default account (``IMAP_USER``/``IMAP_PASSWORD``)."""
        return ImapAccount(self.user, self.password)

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying TLS context that trusts ``ca_file`` (hostname checks stay on)."""
        return ssl.create_default_context(cafile=self.ca_file)

    def connect(self, account: ImapAccount | None = None, *, use_tls: bool = True) -> IMAPClient:
        """Return a logged-in ``IMAPClient`` (IMAPS by default); the caller must ``logout()``."""
        account = account or self.account
        if use_tls:
            client = IMAPClient(
                self.host,
                port=self.imaps_port,
                ssl=True,
                ssl_context=self.ssl_context(),
                timeout=_CONNECT_TIMEOUT_S,
            )
        else:
            client = IMAPClient(self.host, port=self.port, ssl=False, timeout=_CONNECT_TIMEOUT_S)
        try:
            client.login(account.user, account.password)
        except Exception:
            client.shutdown()
            raise
        return client

    def doveadm(self, *args: str, stdin: bytes | None = None) -> str:
        """Run ``doveadm -c DOVECOT_CONF ARGS...`` and return its stdout; raise with stderr on failure."""
        if not self.dovecot_conf:
            _fail("DOVECOT_CONF is not set, so mailboxes cannot be seeded with doveadm")
        proc = subprocess.run(
            ["doveadm", "-c", self.dovecot_conf, *args],
            input=stdin,
            capture_output=True,
            timeout=_DOVEADM_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"doveadm {' '.join(args)} failed with rc={proc.returncode}: {proc.stderr.decode().strip()}"
            )
        return proc.stdout.decode()

    def append(self, message: bytes, *, user: str | None = None, folder: str = "INBOX") -> None:
        """Store an RFC 822 ``message`` in ``folder`` of ``user`` without IMAP (``doveadm save``)."""
        self.doveadm("save", "-u", user or self.user, "-m", folder, stdin=message)

    def create_folder(self, folder: str, *, user: str | None = None) -> None:
        """Create ``folder`` for ``user``."""
        self.doveadm("mailbox", "create", "-u", user or self.user, folder)

    def mailbox_status(self, folder: str = "INBOX", *, user: str | None = None) -> dict[str, int]:
        """Return ``messages``, ``uidnext`` and ``uidvalidity`` of ``folder``."""
        out = self.doveadm(
            "-f", "tab", "mailbox", "status", "-u", user or self.user, "messages uidnext uidvalidity", folder
        )
        header, values = out.strip().splitlines()[:2]
        row = dict(zip(header.split("\t"), values.split("\t"), strict=True))
        return {key: int(row[key]) for key in ("messages", "uidnext", "uidvalidity")}

    def recreate_folder(self, folder: str, *, user: str | None = None) -> None:
        """Delete and recreate ``folder`` (emptied, with a new UIDVALIDITY).

        INBOX cannot be deleted, so for INBOX its messages are expunged and its UIDVALIDITY is
        raised instead, which is what an IMAP client sees after a mailbox was rebuilt.
        """
        user = user or self.user
        if folder.upper() == "INBOX":
            self.doveadm("expunge", "-u", user, "mailbox", "INBOX", "all")
            self.set_uidvalidity(self.mailbox_status("INBOX", user=user)["uidvalidity"] + 1, user=user)
            return
        # Dovecot picks UIDVALIDITY from the clock; a folder recreated in the same second
        # could get its old value back, so make sure it changes.
        old = None
        with contextlib.suppress(RuntimeError):  # the folder may not exist yet
            old = self.mailbox_status(folder, user=user)["uidvalidity"]
            self.doveadm("mailbox", "delete", "-u", user, "-r", "-s", folder)
        self.create_folder(folder, user=user)
        new = self.mailbox_status(folder, user=user)["uidvalidity"]
        if old is not None and new == old:
            self.set_uidvalidity(new + 1, folder, user=user)

    def set_uidvalidity(self, value: int, folder: str = "INBOX", *, user: str | None = None) -> None:
        """Set ``folder``'s UIDVALIDITY to ``value`` (``doveadm mailbox update --uid-validity``)."""
        self.doveadm("mailbox", "update", "-u", user or self.user, "--uid-validity", str(value), folder)

    def reset_user(self, user: str | None = None) -> None:
        """Empty ``user``'s mail: delete every folder but INBOX and expunge INBOX."""
        user = user or self.user
        for line in self.doveadm("mailbox", "list", "-u", user).split("\n"):
            name = line.strip()
            if name and name.upper() != "INBOX":
                with contextlib.suppress(RuntimeError):  # a parent may already be gone
                    self.doveadm("mailbox", "delete", "-u", user, "-r", "-s", name)
        self.doveadm("expunge", "-u", user, "mailbox", "INBOX", "all")

    def create_user(self) -> ImapAccount:
        """Return a new, empty throwaway account (``t-<random>@IMAP_THROWAWAY_DOMAIN``, password secret).

        The local Dovecot accepts any user in that domain with password ``secret``, so nothing has to
        be registered and every call gives a mailbox no other test or session uses.
        """
        if not self.throwaway_domain:
            _fail("IMAP_THROWAWAY_DOMAIN is not set, so throwaway IMAP users cannot be created")
        return ImapAccount(f"t-{uuid.uuid4().hex[:12]}@{self.throwaway_domain}", _THROWAWAY_PASSWORD)

    def delete_user(self, account: ImapAccount) -> None:
        """Remove the mail files of a throwaway ``account`` (the name stays valid, empty again)."""
        home = self.doveadm("user", "-f", "home", account.user).strip()
        if home:
            shutil.rmtree(home, ignore_errors=True)


def _check_tcp(host: str, port: int, variable: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        _fail(f"IMAP server {host}:{port} ({variable}) is unreachable ({exc})")


@pytest.fixture(scope="session")
def imap_service() -> ImapService:
    """The IMAP server from ``IMAP_*`` variables, checked to accept TCP on both ports."""
    host = _require_env("IMAP_HOST")
    port = int(_require_env("IMAP_PORT"))
    imaps_port = int(_require_env("IMAPS_PORT"))
    service = ImapService(
        host=host,
        port=port,
        imaps_port=imaps_port,
        user=_require_env("IMAP_USER"),
        password=_require_env("IMAP_PASSWORD"),
        ca_file=os.environ.get("IMAP_CA_FILE") or None,
        dovecot_conf=os.environ.get("DOVECOT_CONF") or None,
        throwaway_domain=os.environ.get("IMAP_THROWAWAY_DOMAIN") or None,
    )
    _check_tcp(host, port, "IMAP_PORT")
    _check_tcp(host, imaps_port, "IMAPS_PORT")
    return service


@pytest.fixture
def imap_account(imap_service: ImapService) -> Iterator[ImapAccount]:
    """A throwaway IMAP user with empty mailboxes; its mail files are removed after the test."""
    account = imap_service.create_user()
    yield account
    imap_service.delete_user(account)
