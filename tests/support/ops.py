"""pytest plugin (ops helper): Deps wired to the real local services, a throwaway Redis, a TCP proxy.

- ``make_ops_deps(database=True)``: a ``Deps`` on the session's Redis database, Azurite, and (optionally) a
  fresh migrated database, with four freshly created, uniquely named worker queues;
- ``throwaway_redis``: a ``redis-server`` of its own on a free port that a test may stop and start again;
- ``TcpProxy``: forwards a local port to a server, and can be stopped and started (a database "outage").
- ``receive_one(deps, queue)``: the next message of a queue as the trigger would get it.
- ``insert_email_account(database_url, ...)`` / ``insert_outbound_message(database_url)``: rows for the ops
  commands that read the store (poll-now, reconcile, the poll lag gauge).
- ``HangUpServer``: accepts TCP connections and closes them at once, counting them (an unreachable account).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

from shared.deps import Deps
from shared.settings import Settings

__all__ = [
    "HangUpServer",
    "ReceivedMessage",
    "TcpProxy",
    "ThrowawayRedis",
    "insert_email_account",
    "insert_outbound_message",
    "make_ops_deps",
    "receive_one",
    "throwaway_redis",
]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ReceivedMessage:
    """What ``Deps.run_message`` needs of a queue message."""

    id: str
    body: bytes

    def get_body(self) -> bytes:
        """The decoded body."""
        return self.body


def receive_one(deps: Deps, queue: str, *, wait_s: float = 10.0) -> ReceivedMessage:
    """Receive and delete the next visible message of ``queue`` (as the host would before completing)."""
    client = deps.queues.client(queue)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for message in client.receive_messages(max_messages=1, visibility_timeout=30):
            client.delete_message(message)
            content = message.content
            return ReceivedMessage(str(message.id), content if isinstance(content, bytes) else content.encode())
        time.sleep(0.1)
    pytest.fail(f"no message on {queue} within {wait_s} s")


@pytest.fixture
def make_ops_deps(
    redis_url: str, storage_connection_string: str, unique_queue_name: Callable[..., str],
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Deps]]:
    """Factory of ``Deps`` on the local services with unique queues; ``extra`` adds settings."""
    built: list[Deps] = []

    def make(*, database: bool = True, **extra: str) -> Deps:
        env = {
            "REDIS_URL": redis_url,
            "AzureWebJobsStorage": storage_connection_string,
            "EMAIL_QUEUE_NAME": unique_queue_name("email"),
            "WHATSAPP_QUEUE_NAME": unique_queue_name("wa"),
            "WHATSAPP_PRIORITY_QUEUE_NAME": unique_queue_name("wahi"),
            "TRANSCRIPTION_QUEUE_NAME": unique_queue_name("tr"),
        }
        if database:
            env["DATABASE_URL"] = request.getfixturevalue("database_url")
        env.update(extra)
        deps = Deps(Settings.from_env(env), message_encoding="base64")
        built.append(deps)
        return deps

    yield make
    for deps in built:
        with contextlib.suppress(Exception):
            deps.metrics.clear()


@dataclass
class ThrowawayRedis:
    """A redis-server of this test alone."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again) and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH; install Redis to run the readiness tests")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"throwaway redis-server on port {self.port} did not start")
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """Kill it (our process only) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    """A started redis-server on a free port, killed after the test."""
    server = ThrowawayRedis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``stop()`` closes every connection, ``start()`` reopens."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> None:
        """Listen and forward."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen()
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            if self._server is not None:
                # shutdown() wakes the thread blocked in accept(); close() alone would leave it accepting.
                with contextlib.suppress(OSError):
                    self._server.shutdown(socket.SHUT_RDWR)
                self._server.close()
                self._server = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def insert_email_account(
    database_url: str, *, active: bool = True, imap_enabled: bool = True, last_poll_status: str | None = None,
    last_polled_ago_s: float | None = None,
) -> str:
    """An email account row (IMAP password encrypted with a throwaway key); returns its id."""
    tag = uuid.uuid4().hex[:12]
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO email_accounts (name, email, smtp_user, smtp_pass_encrypted, imap_user,"
            " imap_pass_encrypted, is_active, imap_enabled, last_poll_status, last_polled_at)"
            " VALUES (%s, %s, %s, encrypt_email_password('x', 'k'), %s, encrypt_email_password('x', 'k'),"
            " %s, %s, %s, CASE WHEN %s::float8 IS NULL THEN NULL"
            " ELSE now() - make_interval(secs => %s::float8) END) RETURNING id",
            [f"Ops {tag}", f"ops-{tag}@banxway.test", tag, tag, active, imap_enabled, last_poll_status,
             last_polled_ago_s, last_polled_ago_s],
        ).fetchone()
    assert row is not None
    return str(row[0])


def insert_outbound_message(database_url: str) -> str:
    """A thread and a pending outbound WhatsApp message row; returns the message id."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        thread = conn.execute(
            "INSERT INTO communication_threads (reference, type, primary_channel)"
            " VALUES ('BX-1999-' || gen_random_uuid(), 'QUERY', 'WHATSAPP') RETURNING id"
        ).fetchone()
        assert thread is not None
        row = conn.execute(
            "INSERT INTO communication_messages (thread_id, channel, direction, status, content)"
            " VALUES (%s, 'WHATSAPP', 'OUTBOUND', 'PENDING', 'hello') RETURNING id",
            [thread[0]],
        ).fetchone()
    assert row is not None
    return str(row[0])


class HangUpServer:
    """Listens on a free loopback port, accepts every connection and closes it at once; counts them."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen()
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        self._accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self._accepted

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._accepted += 1
            conn.close()

    def close(self) -> None:
        """Stop listening."""
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
