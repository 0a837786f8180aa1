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
