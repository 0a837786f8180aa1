"""End to end through the local Functions host: Azurite queue → whatsapp_send → Exotel stand-in → PostgreSQL,
then the stand-in's delivery report → whatsapp_status_callback (HTTP) → DELIVERED."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from azure.storage.queue import QueueServiceClient

from devhost import LocalHost
from devhost.standins.exotel import ExotelStandin
from shared.deps import reset_deps
from shared.settings import reset_settings_cache
from tests.support.host import enqueue
from tests.whatsapp.conftest import CALLBACK_SECRET

Db = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def fresh_deps() -> Iterator[None]:
    """The in-process host reads settings on its first invocation: no other test's cached deps."""
    reset_settings_cache()
    reset_deps()
    yield
    reset_settings_cache()
    reset_deps()


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _row(db: Db, message_id: str) -> dict[str, Any]:
    row = db.execute("SELECT status::text AS status, external_id, sent_at, delivered_at"
                     " FROM communication_messages WHERE id = %s", [message_id]).fetchone()
    assert row is not None
    return row


def test_a_queued_send_reaches_exotel_once_is_recorded_sent_and_its_delivery_report_marks_it_delivered(
    *, local_host: Callable[..., LocalHost], fresh_deps: None, standin: ExotelStandin, database_url: str,
    redis_url: str, db: Db, make_message: Callable[[], tuple[str, str]], queue_service: QueueServiceClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = f"wa-e2e-{uuid.uuid4().hex[:10]}"
    host = local_host(functions=["whatsapp_send", "whatsapp_status_callback"], settings={
        "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "WHATSAPP_QUEUE_NAME": queue, "WHATSAPP_PRIORITY_QUEUE_NAME": f"{queue}-high",
        "EXOTEL_API_URL": standin.url, "EXOTEL_SID": standin.account_sid, "EXOTEL_API_KEY": "test-key",
        "EXOTEL_TOKEN": "test-token", "EXOTEL_WHATSAPP_NUMBER": "+911234567890",
        "EXOTEL_CALLBACK_SECRET": CALLBACK_SECRET,
    })
    # The callback URL needs the host's port, known only now; settings are read on the first invocation.
    monkeypatch.setenv("EXOTEL_STATUS_CALLBACK_URL", f"{host.base_url}/api/whatsapp/status")
    message_id, thread_id = make_message()
    body = json.dumps({"action": "SEND_MESSAGE", "data": {
        "threadId": thread_id, "to": "+919876543210", "text": "Your shipment left the port",
        "messageId": message_id}})
    enqueue(queue_service, queue, body)
    enqueue(queue_service, queue, body)  # the producer retried: a duplicate of the same message

    sent = _wait_for("the message recorded SENT", lambda: _row(db, message_id)["status"] == "SENT")
    assert sent
    [sid] = standin.accepted_sids()
    row = _row(db, message_id)
    assert row["external_id"] == sid
    assert row["sent_at"] is not None
    [request] = standin.sends()
    item = request.body["whatsapp"]["messages"][0]
    assert item["custom_data"] == message_id
    assert item["status_callback"] == f"{host.base_url}/api/whatsapp/status/{CALLBACK_SECRET}"

    _wait_for("both deliveries handled", lambda: queue_service.get_queue_client(queue)
              .get_queue_properties().approximate_message_count == 0)
    assert len(standin.sends()) == 1  # the duplicate was acknowledged without calling Exotel

    assert standin.send_dlr(sid, "EX_MESSAGE_DELIVERED") == 200  # to the status_callback it was given
    delivered = _row(db, message_id)
    assert delivered["status"] == "DELIVERED"
    assert delivered["delivered_at"] is not None
