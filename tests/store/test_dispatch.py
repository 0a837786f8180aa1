"""Contract: WhatsApp send claims, outcomes and delivery reports."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from shared.store import DeliveryStatus, SendOutcome
from shared.store.base import RpcStore


def test_concurrent_claims_of_one_send_have_exactly_one_winner(
    store: RpcStore, make_message: Callable[..., str]
) -> None:
    message = make_message()
    barrier = threading.Barrier(8)
    outcomes: list[SendOutcome] = []

    def claim(owner: str) -> None:
        barrier.wait()
        outcomes.append(store.claim_send(message, owner=owner, claim_s=60).outcome)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted([SendOutcome.CLAIMED] + [SendOutcome.IN_PROGRESS] * 7)


def test_a_sent_message_is_never_claimed_again_and_the_row_records_the_sid(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message()
    db.execute("UPDATE communication_messages SET error_message = 'old', failed_at = now() WHERE id = %s", [message])
    assert store.claim_send(message, owner="a", claim_s=60).outcome is SendOutcome.CLAIMED
    done = store.complete_send(message, provider_sid="SM123", provider_response={"items": [1, 2]})
    assert done.outcome is SendOutcome.SENT
    again = store.claim_send(message, owner="b", claim_s=60)
    assert again.outcome is SendOutcome.ALREADY_SENT
    assert again.provider_sid == "SM123"
    row = db.execute("SELECT * FROM communication_messages WHERE id = %s", [message]).fetchone()
    assert row is not None
    assert (row["status"], row["external_id"], row["error_message"], row["failed_at"]) == ("SENT", "SM123", None, None)
    dispatch = db.execute("SELECT provider_response FROM outbound_dispatch").fetchone()
    assert dispatch == {"provider_response": {"items": [1, 2]}}


def test_a_stale_claim_needs_reconciliation_and_can_be_resolved(
    store: RpcStore, make_message: Callable[..., str]
) -> None:
    message = make_message()
    assert store.claim_send(message, owner="crashed", claim_s=0.01).outcome is SendOutcome.CLAIMED
    time.sleep(0.05)
    assert store.claim_send(message, owner="b", claim_s=60).outcome is SendOutcome.NEEDS_RECONCILIATION
    pending = store.list_sends_needing_reconciliation()
    assert [p.message_id for p in pending] == [message]
    assert store.resolve_send(message, resolution="not_sent").outcome is SendOutcome.RELEASED
    assert store.claim_send(message, owner="c", claim_s=60).outcome is SendOutcome.CLAIMED
    assert store.list_sends_needing_reconciliation() == []


def test_failures_release_and_missing_rows(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message()
    assert store.claim_send(message, owner="a", claim_s=60).outcome is SendOutcome.CLAIMED
    assert store.release_send(message, owner="a", error="429 from Exotel")
    assert store.claim_send(message, owner="b", claim_s=60).attempts == 2
    assert store.fail_send(message, error="Exotel 400: invalid number").outcome is SendOutcome.FAILED
    assert store.claim_send(message, owner="c", claim_s=60).outcome is SendOutcome.FAILED
    row = db.execute("SELECT status, error_message, failed_at FROM communication_messages WHERE id = %s",
                     [message]).fetchone()
    assert row is not None
    assert row["status"] == "FAILED"
    assert row["error_message"] == "Exotel 400: invalid number"
    missing = store.claim_send("00000000-0000-0000-0000-00000000000f", owner="a", claim_s=60)
    assert missing.outcome is SendOutcome.MISSING


def test_delivery_reports_never_move_a_status_backwards(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message(status="SENT", external_id="SM9")
    assert store.apply_delivery_status("SM9", DeliveryStatus.READ).outcome == "applied"
    assert store.apply_delivery_status("SM9", DeliveryStatus.DELIVERED).outcome == "stale"
    assert store.apply_delivery_status("SM9", DeliveryStatus.FAILED, reason="late").outcome == "stale"
    assert store.apply_delivery_status("nope", DeliveryStatus.READ).outcome == "not_found"
    row = db.execute("SELECT status, read_at, delivered_at FROM communication_messages WHERE id = %s",
                     [message]).fetchone()
    assert row is not None
    assert row["status"] == "READ"
    assert row["read_at"]
    assert row["delivered_at"]
    failing = make_message(status="SENT", external_id="SM10")
    update = store.apply_delivery_status("SM10", DeliveryStatus.FAILED, reason="EX_MESSAGE_UNDELIVERED")
    assert (update.outcome, update.message_id) == ("applied", failing)
    row = db.execute("SELECT status, error_message FROM communication_messages WHERE id = %s", [failing]).fetchone()
    assert row == {"status": "FAILED", "error_message": "EX_MESSAGE_UNDELIVERED"}


def _message_row(db: psycopg.Connection[dict[str, Any]], message_id: str) -> dict[str, Any]:
    row = db.execute("SELECT status::text AS status, external_id, sent_at, delivered_at, read_at, error_message,"
                     " failed_at FROM communication_messages WHERE id = %s", [message_id]).fetchone()
    assert row is not None
    return row


def test_a_report_before_the_sid_was_recorded_applies_by_message_id_and_survives_complete_send(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message()
    assert store.claim_send(message, owner="a", claim_s=60).outcome is SendOutcome.CLAIMED
    early = store.apply_delivery_status_for_message(message, DeliveryStatus.DELIVERED, provider_sid="SM77")
    assert (early.outcome, early.message_id, early.status) == ("applied", message, "DELIVERED")
    row = _message_row(db, message)
    assert (row["status"], row["external_id"]) == ("DELIVERED", "SM77")
    assert row["delivered_at"] is not None

    assert store.complete_send(message, provider_sid="SM77").outcome is SendOutcome.SENT
    row = _message_row(db, message)
    assert (row["status"], row["external_id"]) == ("DELIVERED", "SM77")  # not moved back to SENT
    assert row["sent_at"] is not None
    assert store.apply_delivery_status("SM77", DeliveryStatus.READ).outcome == "applied"  # later ones by sid


def test_an_early_failure_report_is_not_overwritten_by_complete_send(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message()
    store.claim_send(message, owner="a", claim_s=60)
    update = store.apply_delivery_status_for_message(
        message, DeliveryStatus.FAILED, provider_sid="SM78", reason="EX_REENGAGEMENT_ERROR: outside 24 h")
    assert update.outcome == "applied"
    store.complete_send(message, provider_sid="SM78")
    row = _message_row(db, message)
    assert (row["status"], row["external_id"]) == ("FAILED", "SM78")
    assert row["error_message"] == "EX_REENGAGEMENT_ERROR: outside 24 h"
    assert row["failed_at"] is not None
    assert row["sent_at"] is not None
    # Positive evidence still wins over a failure, as with reports by sid.
    assert store.apply_delivery_status("SM78", DeliveryStatus.DELIVERED).outcome == "applied"
    assert _message_row(db, message)["error_message"] is None


def test_a_failed_row_without_a_failure_report_becomes_sent_on_success(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message(status="FAILED")  # e.g. the original worker's intermediate FAILED
    store.claim_send(message, owner="a", claim_s=60)
    store.complete_send(message, provider_sid="SM79")
    row = _message_row(db, message)
    assert (row["status"], row["error_message"], row["failed_at"]) == ("SENT", None, None)


def test_reports_by_message_id_never_move_a_status_backwards(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message()
    store.claim_send(message, owner="a", claim_s=60)
    apply = store.apply_delivery_status_for_message
    assert apply(message, DeliveryStatus.READ, provider_sid="SM80").outcome == "applied"
    assert apply(message, DeliveryStatus.DELIVERED, provider_sid="SM80").outcome == "stale"
    assert apply(message, DeliveryStatus.SENT, provider_sid="SM80").outcome == "stale"
    stale = apply(message, DeliveryStatus.FAILED, provider_sid="SM80", reason="late")
    assert (stale.outcome, stale.status) == ("stale", "READ")
    row = _message_row(db, message)
    assert (row["status"], row["error_message"]) == ("READ", None)
    assert row["read_at"] is not None
    assert row["delivered_at"] is not None


def test_a_report_by_message_id_for_another_send_or_message_is_not_found(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    sent = make_message(status="SENT", external_id="SM81")
    assert store.apply_delivery_status_for_message(
        sent, DeliveryStatus.DELIVERED, provider_sid="SM-other").outcome == "not_found"
    assert _message_row(db, sent)["status"] == "SENT"
    email = make_message(channel="EMAIL")
    assert store.apply_delivery_status_for_message(email, DeliveryStatus.DELIVERED).outcome == "not_found"
    inbound = make_message(direction="INBOUND")
    assert store.apply_delivery_status_for_message(inbound, DeliveryStatus.READ).outcome == "not_found"
    missing = "00000000-0000-0000-0000-0000000000aa"
    assert store.apply_delivery_status_for_message(missing, DeliveryStatus.READ).outcome == "not_found"
