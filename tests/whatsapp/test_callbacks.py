"""Delivery-status callbacks: secret check, monotonic updates, failures with reasons, invalid bodies recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis

from devhost.standins.exotel import dlr_item
from shared.store.postgres import PostgresStore
from shared.whatsapp.callbacks import INVALID_CALLBACKS_KEY, handle_status_callback
from tests.whatsapp.conftest import CALLBACK_SECRET


def _sent_message(store: PostgresStore, make_message: Callable[[], tuple[str, str]], sid: str) -> str:
    message_id, _ = make_message()
    store.claim_send(message_id, owner="t", claim_s=60)
    store.complete_send(message_id, provider_sid=sid)
    return message_id


def _post(store: PostgresStore, *statuses: str, sid: str = "sid-1", secret: str = CALLBACK_SECRET,
          redis_client: redis.Redis | None = None, body: bytes | None = None) -> Any:
    if body is None:
        items = [dlr_item(sid, "+919876543210", status, "msg") for status in statuses]
        body = json.dumps({"whatsapp": {"messages": items}}).encode()
    return handle_status_callback(body, given_secret=secret, expected_secret=CALLBACK_SECRET, store=store,
                                  redis=redis_client)


def _status(db: psycopg.Connection[dict[str, Any]], message_id: str) -> dict[str, Any]:
    row = db.execute("SELECT status::text AS status, delivered_at, read_at, error_message"
                     " FROM communication_messages WHERE id = %s", [message_id]).fetchone()
    assert row is not None
    return row


def test_callbacks_out_of_order_never_move_status_backwards(
    store: PostgresStore, make_message: Callable[[], tuple[str, str]], db: psycopg.Connection[dict[str, Any]],
) -> None:
    message_id = _sent_message(store, make_message, "sid-1")
    assert _post(store, "EX_MESSAGE_SEEN").body["applied"] == 1
    answer = _post(store, "EX_MESSAGE_DELIVERED", "EX_MESSAGE_SENT")
    assert answer.status_code == 200
    assert answer.body["stale"] == 2
    row = _status(db, message_id)
    assert row["status"] == "READ"
    assert row["read_at"] is not None


def test_delivered_then_read_in_one_callback(
    store: PostgresStore, make_message: Callable[[], tuple[str, str]], db: psycopg.Connection[dict[str, Any]],
) -> None:
    message_id = _sent_message(store, make_message, "sid-1")
    _post(store, "EX_MESSAGE_DELIVERED", "EX_MESSAGE_SEEN")
    assert _status(db, message_id)["status"] == "READ"


def test_a_failure_status_records_the_reason(
    store: PostgresStore, make_message: Callable[[], tuple[str, str]], db: psycopg.Connection[dict[str, Any]],
) -> None:
    message_id = _sent_message(store, make_message, "sid-1")
    _post(store, "EX_REENGAGEMENT_ERROR")
    row = _status(db, message_id)
    assert row["status"] == "FAILED"
    assert row["error_message"].startswith("EX_REENGAGEMENT_ERROR")


def test_a_wrong_secret_is_refused_and_changes_nothing(
    store: PostgresStore, make_message: Callable[[], tuple[str, str]], db: psycopg.Connection[dict[str, Any]],
) -> None:
    message_id = _sent_message(store, make_message, "sid-1")
    assert _post(store, "EX_MESSAGE_SEEN", secret="guess").status_code == 401
    assert _status(db, message_id)["status"] == "SENT"


def test_an_unknown_sid_is_acknowledged(store: PostgresStore) -> None:
    answer = _post(store, "EX_MESSAGE_DELIVERED", sid="nobody")
    assert answer.status_code == 200
    assert answer.body["not_found"] == 1


def test_inbound_message_callbacks_are_ignored(store: PostgresStore) -> None:
    body = json.dumps({"whatsapp": {"messages": [{"callback_type": "incoming_message", "from": "91"}]}}).encode()
    assert _post(store, body=body).body["ignored"] == 1


def test_invalid_bodies_get_400_and_are_recorded_for_operators(
    store: PostgresStore, redis_client: redis.Redis,
) -> None:
    for body in (b"not json", b'{"whatsapp": {"messages": []}}',
                 b'{"whatsapp": {"messages": [{"callback_type": "dlr", "sid": "x"}]}}'):
        assert _post(store, body=body, redis_client=redis_client).status_code == 400
    recorded = [json.loads(r) for r in redis_client.lrange(INVALID_CALLBACKS_KEY, 0, -1)]
    assert len(recorded) == 3
    assert recorded[0]["problem"] == "whatsapp.messages[0].exo_detailed_status missing or unknown"
    assert recorded[2]["body"] == "not json"


@pytest.mark.parametrize("body", [
    b'{"whatsapp": []}', b'{"whatsapp": "x"}', b'{"whatsapp": null}', b'{"whatsapp": 7}', b"[]", b'"x"',
    b'{"whatsapp": {"messages": "x"}}',
])
def test_a_body_of_the_wrong_shape_gets_400_and_is_recorded(
    store: PostgresStore, redis_client: redis.Redis, body: bytes,
) -> None:
    answer = _post(store, body=body, redis_client=redis_client)
    assert answer.status_code == 400
    recorded = [json.loads(r) for r in redis_client.lrange(INVALID_CALLBACKS_KEY, 0, -1)]
    assert [r["body"] for r in recorded] == [body.decode()]


def test_a_callback_before_the_sid_is_recorded_is_matched_by_our_id_in_custom_data(
    store: PostgresStore, make_message: Callable[[], tuple[str, str]], db: psycopg.Connection[dict[str, Any]],
) -> None:
    message_id, _ = make_message()
    store.claim_send(message_id, owner="sender", claim_s=60)  # Exotel answered; complete_send not committed yet
    body = json.dumps({"whatsapp": {"messages": [
        dlr_item("sid-early", "+919876543210", "EX_MESSAGE_DELIVERED", message_id)]}}).encode()
    answer = _post(store, body=body)
    assert (answer.status_code, answer.body["applied"], answer.body["not_found"]) == (200, 1, 0)
    store.complete_send(message_id, provider_sid="sid-early")
    assert _status(db, message_id)["status"] == "DELIVERED"
    assert _post(store, "EX_MESSAGE_SEEN", sid="sid-early").body["applied"] == 1


def test_a_callback_with_an_unknown_sid_and_foreign_custom_data_changes_nothing(
    store: PostgresStore, make_message: Callable[[], tuple[str, str]], db: psycopg.Connection[dict[str, Any]],
) -> None:
    message_id = _sent_message(store, make_message, "sid-ours")
    for custom_data in ("Order12", message_id):  # not a message id; our id but another send's sid
        body = json.dumps({"whatsapp": {"messages": [
            dlr_item("sid-theirs", "+919876543210", "EX_MESSAGE_DELIVERED", custom_data)]}}).encode()
        assert _post(store, body=body).body["not_found"] == 1
    assert _status(db, message_id)["status"] == "SENT"
