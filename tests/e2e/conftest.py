"""End-to-end fixtures: the real app (function_app.py) in the local host on the real local services.

``app_host(functions, **settings)`` starts the in-process local host with only ``functions`` enabled, on this
test's own queues, database, Redis database and attachments container, and returns an ``AppHost`` with
helpers to enqueue, wait and call HTTP routes. The process-wide ``Deps`` are reset before and closed after,
so one test's clients never serve another's settings.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import pytest
import redis
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient
from psycopg.rows import dict_row

import shared.deps
from devhost import LocalHost
from shared.settings import reset_settings_cache
from tests.support.host import enqueue
from tests.support.services import ImapService

FUNCTION_KEY = "e2e-function-key"
EMAIL_KEY = "e2e-email-key"
T = TypeVar("T")

Db = psycopg.Connection[dict[str, Any]]


def wait_for(what: str, probe: Callable[[], T | None], *, timeout_s: float = 30.0, interval_s: float = 0.2) -> T:
    """Call ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class HttpAnswer:
    """Status, headers and body of one HTTP call."""

    status: int
    body: str
    content_type: str


@dataclass
class AppHost:
    """A started local host running the app, and where its inputs go."""

    host: LocalHost
    settings: dict[str, str]
    queue_service: QueueServiceClient

    def queue(self, setting: str) -> str:
        """The queue name the app reads from ``setting`` (e.g. ``EMAIL_QUEUE_NAME``)."""
        return self.settings[setting]

    def enqueue(self, setting: str, body: str) -> str:
        """Put ``body`` on the queue named by ``setting``, base64 as the main API does."""
        return enqueue(self.queue_service, self.queue(setting), body)

    def queue_depth(self, name: str) -> int:
        """Approximate number of messages on queue ``name`` (0 when it does not exist)."""
        try:
            props = self.queue_service.get_queue_client(name).get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return int(props.approximate_message_count or 0)

    def get(self, path: str, *, key: str | None = FUNCTION_KEY, timeout_s: float = 30.0) -> HttpAnswer:
        """GET ``/api/<path>`` (with the function key unless ``key`` is None)."""
        request = urllib.request.Request(f"{self.host.base_url}/api/{path}")  # noqa: S310 - loopback host
        if key:
            request.add_header("x-functions-key", key)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                return HttpAnswer(response.status, response.read().decode(), response.headers["Content-Type"] or "")
        except urllib.error.HTTPError as exc:
            return HttpAnswer(exc.code, exc.read().decode(), exc.headers.get("Content-Type") or "")


def _close(thing: Any, depth: int = 0) -> None:
    """Close ``thing`` if it can be closed, else the closable clients it holds (e.g. the OpenAI client inside
    the transcription services), so no pooled socket is left for the garbage collector to warn about."""
    close = getattr(thing, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()
        return
    if depth < 3 and hasattr(thing, "__dict__"):
        for value in vars(thing).values():
            _close(value, depth + 1)


def _close_process_deps() -> None:
    """Close the clients the app built in this process and forget them (and the settings)."""
    if shared.deps.get_deps.cache_info().currsize:
        built: dict[str, Any] = shared.deps.get_deps()._built
        for client in built.values():
            _close(client)
    shared.deps.reset_deps()
    reset_settings_cache()


@pytest.fixture
def db(database_url: str) -> Iterator[Db]:
    """A direct connection to this test's fresh migrated database."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def attachments_container(blob_service: BlobServiceClient) -> Iterator[str]:
    """A unique attachments container, deleted after the test."""
    name = f"e2e-att-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(ResourceNotFoundError):
        blob_service.delete_container(name)


@pytest.fixture
def app_host(
    local_host: Callable[..., LocalHost],
    database_url: str,
    redis_url: str,
    redis_client: redis.Redis,
    storage_connection_string: str,
    queue_service: QueueServiceClient,
    unique_queue_name: Callable[..., str],
    imap_service: ImapService,
    attachments_container: str,
) -> Iterator[Callable[..., AppHost]]:
    """Factory: ``app_host(["email_poll_inbox", ...], SETTING="value", ...)`` → a started ``AppHost``."""
    started: list[LocalHost] = []
    redis_client.flushdb()  # metrics and coordination state start empty (redis_url is this session's database)
    _close_process_deps()

    def start(functions: list[str], **extra: str) -> AppHost:
        settings = {
            "AzureWebJobsStorage": storage_connection_string,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "EMAIL_QUEUE_NAME": unique_queue_name("e2e-email"),
            "WHATSAPP_QUEUE_NAME": unique_queue_name("e2e-wa"),
            "WHATSAPP_PRIORITY_QUEUE_NAME": unique_queue_name("e2e-wahi"),
            "TRANSCRIPTION_QUEUE_NAME": unique_queue_name("e2e-tr"),
            "EMAIL_ENCRYPTION_KEY": EMAIL_KEY,
            "EMAIL_ATTACHMENTS_CONTAINER": attachments_container,
            "IMAP_CA_FILE": imap_service.ca_file or "",
            "DEVHOST_FUNCTION_KEY": FUNCTION_KEY,
            "RETRY_BASE_DELAY_S": "0.5",
            **extra,
        }
        host = local_host(functions=functions, settings=settings, grace_s=5.0)
        started.append(host)
        return AppHost(host, settings, queue_service)

    yield start
    for host in started:
        host.stop()
    _close_process_deps()


@pytest.fixture
def make_email_account(db: Db, imap_service: ImapService) -> Callable[..., str]:
    """Factory: an ``email_accounts`` row for an IMAP user on the local Dovecot (IMAPS); returns its id."""

    def make(user: str, password: str, *, poll_interval_ms: int = 30_000) -> str:
        row = db.execute(
            "INSERT INTO email_accounts (name, email, smtp_user, smtp_pass_encrypted, imap_host, imap_port,"
            " imap_user, imap_pass_encrypted, imap_tls, imap_enabled, is_active, poll_interval_ms)"
            " VALUES ('E2E inbox', %s, %s, encrypt_email_password('x', %s), %s, %s, %s,"
            " encrypt_email_password(%s, %s), true, true, true, %s) RETURNING id",
            [f"e2e-{uuid.uuid4().hex[:8]}@banxway.test", user, EMAIL_KEY, imap_service.host,
             imap_service.imaps_port, user, password, EMAIL_KEY, poll_interval_ms],
        ).fetchone()
        assert row is not None
        return str(row["id"])

    return make
