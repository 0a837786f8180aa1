"""Fixtures for the WhatsApp worker: the Exotel stand-in, a migrated database, real Redis, wired services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import redis
import requests
from psycopg.rows import dict_row

from devhost.standins.exotel import ExotelStandin
from shared.coordination.circuit import CircuitBreaker
from shared.coordination.ratelimit import SlotRateLimiter
from shared.jobs import Envelope
from shared.store.postgres import PostgresStore
from shared.whatsapp.exotel import ExotelClient, ExotelConfig
from shared.whatsapp.handler import WhatsAppServices

CALLBACK_SECRET = "cb-secret-123"


@pytest.fixture
def standin() -> Iterator[ExotelStandin]:
    with ExotelStandin() as server:
        yield server


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def store(database_url: str) -> Iterator[PostgresStore]:
    built = PostgresStore(database_url, pool_max_size=4, connect_timeout_s=5)
    yield built
    built.close()


@pytest.fixture
def make_message(db: psycopg.Connection[dict[str, Any]]) -> Callable[[], tuple[str, str]]:
    """Factory: a thread and a pre-created outbound WhatsApp message row; returns (message_id, thread_id)."""

    def make() -> tuple[str, str]:
        thread = db.execute(
            "INSERT INTO communication_threads (reference, type, primary_channel)"
            " VALUES ('BX-1999-' || gen_random_uuid(), 'QUERY', 'WHATSAPP') RETURNING id"
        ).fetchone()
        assert thread is not None
        row = db.execute(
            "INSERT INTO communication_messages (thread_id, channel, direction, status, content)"
            " VALUES (%s, 'WHATSAPP', 'OUTBOUND', 'PENDING', 'hello') RETURNING id",
            [thread["id"]],
        ).fetchone()
        assert row is not None
        return str(row["id"]), str(thread["id"])

    return make


@pytest.fixture
def make_services(
    standin: ExotelStandin, store: PostgresStore, redis_client: redis.Redis
) -> Callable[..., WhatsAppServices]:
    """Factory for wired services (each call: a new session, limiter and circuit objects on the same Redis)."""

    def make(*, rate_per_s: float = 50.0, max_wait_s: float = 2.0, failure_threshold: int = 100,
             cooldown_s: float = 30.0, read_timeout_s: float = 5.0, claim_s: float = 300.0) -> WhatsAppServices:
        config = ExotelConfig(
            api_url=standin.url, account_sid=standin.account_sid, api_key="test-key", api_token="test-token",
            from_number="+911234567890", status_callback_url=f"http://127.0.0.1:1/dlr/{CALLBACK_SECRET}",
            connect_timeout_s=2.0, read_timeout_s=read_timeout_s,
        )
        return WhatsAppServices(
            store=store,
            exotel=ExotelClient(requests.Session(), config),
            limiter=SlotRateLimiter(redis_client, "exotel", rate_per_s=rate_per_s, max_wait_s=max_wait_s,
                                    reserve=0.2),
            circuit=CircuitBreaker(redis_client, "exotel", failure_threshold=failure_threshold,
                                   cooldown_s=cooldown_s, probe_ttl_s=10),
            claim_s=claim_s,
            priority_threshold=3,
        )

    return make


@dataclass
class RecordingQueues:
    """Records what the job boundary asks of the queues (the Storage side is covered by tests/test_queues.py)."""

    retried: list[tuple[Envelope[Any], float]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)

    def retry_later(
        self, queue: str, envelope: Envelope[Any], *, delay_s: float, count_attempt: bool = True
    ) -> Envelope[Any]:
        retry = envelope.next_attempt() if count_attempt else envelope  # as QueueOps.retry_later does
        self.retried.append((retry, delay_s))
        return retry

    def dead_letter(self, queue: str, body: str, *, reason: str, error_class: str, attempts: int,
                    job_id: str | None = None) -> str:
        self.dead.append({"queue": queue, "reason": reason, "error_class": error_class, "attempts": attempts})
        return "dead"


@pytest.fixture
def queues() -> RecordingQueues:
    return RecordingQueues()
