"""The send handler end to end through the job boundary: Exotel stand-in, real PostgreSQL and Redis."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import redis
import requests

from devhost.standins.exotel import ExotelStandin, RateLimit
from shared.coordination.circuit import CircuitState
from shared.coordination.ratelimit import Lane, RateLimited, SlotRateLimiter
from shared.jobs import new_envelope
from shared.outcomes import Outcome, RetryPolicy, run_job
from shared.store import SendOutcome, StoreUnavailable
from shared.store.postgres import PostgresStore
from shared.whatsapp.exotel import ExotelClient
from shared.whatsapp.handler import WhatsAppServices, handle_send, lane_for
from tests.whatsapp.conftest import RecordingQueues

TO = "+919876543210"


def _job(message_id: str, thread_id: str, *, to: str = TO, action: str = "SEND_MESSAGE", **data: Any) -> str:
    fields = {"threadId": thread_id, "to": to, "messageId": message_id, **data}
    if action == "SEND_MESSAGE":
        fields.setdefault("text", "Your shipment left the port")
    return json.dumps({"action": action, "data": fields})


def _run(body: str, services: WhatsAppServices, queues: RecordingQueues, *, attempts: int = 6,
         lane: Lane = Lane.BULK, max_age_s: float = 3600.0) -> Any:
    return run_job(kind="whatsapp", queue="whatsapp-processing", body=body, message_id="qm-1",
                   handler=lambda job: handle_send(job, services, lane=lane), queues=queues,  # type: ignore[arg-type]
                   policy=RetryPolicy(max_attempts=attempts, base_delay_s=0.01, max_delay_s=0.05,
                                      max_age_s=max_age_s))


def _row(db: psycopg.Connection[dict[str, Any]], message_id: str) -> dict[str, Any]:
    row = db.execute("SELECT status::text AS status, external_id, sent_at, error_message, failed_at"
                     " FROM communication_messages WHERE id = %s", [message_id]).fetchone()
    assert row is not None
    return row


def test_a_send_records_sent_with_the_real_sid_and_our_id_in_custom_data(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, db: psycopg.Connection[dict[str, Any]],
) -> None:
    message_id, thread_id = make_message()
    result = _run(_job(message_id, thread_id), make_services(), queues)
    assert result.outcome is Outcome.COMPLETED
    row = _row(db, message_id)
    assert row["status"] == "SENT"
    assert row["external_id"] == standin.accepted_sids()[0]
    assert row["sent_at"] is not None
    assert standin.sends()[0].body["whatsapp"]["messages"][0]["custom_data"] == message_id


def test_a_duplicate_delivery_sends_once(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues,
) -> None:
    message_id, thread_id = make_message()
    body = _job(message_id, thread_id)
    services = make_services()
    assert _run(body, services, queues).outcome is Outcome.COMPLETED
    assert _run(body, make_services(), queues).outcome is Outcome.COMPLETED
    assert len(standin.sends()) == 1


def test_a_crash_between_claim_and_answer_is_reconciled_not_resent(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, store: PostgresStore,
) -> None:
    message_id, thread_id = make_message()
    # An earlier attempt claimed the send and died before recording Exotel's answer.
    store.claim_send(message_id, owner="crashed-instance", claim_s=0.05)
    time.sleep(0.1)
    result = _run(_job(message_id, thread_id), make_services(), queues)
    assert result.outcome is Outcome.DEAD_LETTERED
    assert result.error_code == "needs_reconciliation"
    assert "not re-sent" in (result.reason or "")
    assert standin.sends() == []
    assert [p.message_id for p in store.list_sends_needing_reconciliation()] == [message_id]


def test_a_read_timeout_marks_the_send_unknown_and_a_redelivery_does_not_resend(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, store: PostgresStore,
) -> None:
    message_id, thread_id = make_message()
    standin.delay_s = 0.5
    result = _run(_job(message_id, thread_id), make_services(read_timeout_s=0.1), queues)
    assert result.error_code == "needs_reconciliation"
    standin.delay_s = 0
    again = _run(_job(message_id, thread_id), make_services(), queues)
    assert again.error_code == "needs_reconciliation"
    assert len(standin.sends()) == 1  # Exotel got it once (and accepted it); we never sent it again
    assert [p.message_id for p in store.list_sends_needing_reconciliation()] == [message_id]


def test_a_429_pauses_every_sender_and_sends_resume_after_it(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, db: psycopg.Connection[dict[str, Any]],
) -> None:
    standin.set_rate_limit(RateLimit(1, 60.0, retry_after_s=2))
    first, second, third = make_message(), make_message(), make_message()
    instance_a, instance_b = make_services(max_wait_s=0.5), make_services(max_wait_s=0.5)
    assert _run(_job(*first), instance_a, queues).outcome is Outcome.COMPLETED
    limited = _run(_job(*second), instance_a, queues)
    assert limited.outcome is Outcome.RETRIED
    assert limited.error_code == "exotel_rate_limited"
    assert (limited.delay_s or 0) >= 2
    assert queues.retried[-1][0].attempt == 1  # a throttle is a deferral: Exotel took nothing
    requests_so_far = len(standin.sends())
    # Another instance does not even call Exotel while the pause lasts.
    paused = _run(_job(*third), instance_b, queues)
    assert paused.outcome is Outcome.RETRIED
    assert paused.error_code == "rate_limited"
    assert len(standin.sends()) == requests_so_far
    assert _row(db, second[0])["status"] == "PENDING"  # released, not failed
    standin.set_rate_limit(None)
    time.sleep(2.05)
    assert _run(_job(*second), instance_b, queues).outcome is Outcome.COMPLETED
    assert _run(_job(*third), instance_a, queues).outcome is Outcome.COMPLETED
    assert _row(db, third[0])["status"] == "SENT"


def test_a_5xx_storm_backs_off_and_ends_in_the_dead_letter_with_the_reason(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, db: psycopg.Connection[dict[str, Any]],
) -> None:
    standin.fail_next(100, 503)
    message_id, thread_id = make_message()
    services = make_services()
    body = _job(message_id, thread_id)
    outcomes = []
    for _ in range(3):
        result = _run(body, services, queues, attempts=3)
        outcomes.append(result.outcome)
        if queues.retried:
            body = queues.retried[-1][0].to_json()
    assert outcomes == [Outcome.RETRIED, Outcome.RETRIED, Outcome.DEAD_LETTERED]
    assert [job.attempt for job, _ in queues.retried] == [2, 3]
    reason = queues.dead[-1]["reason"]
    assert "retries exhausted after 3 attempts" in reason
    assert "503" in reason
    assert len(standin.sends()) == 3
    assert _row(db, message_id)["status"] == "PENDING"  # never sent, never falsely FAILED


def test_the_circuit_opens_after_repeated_failures_and_delays_without_calling_exotel(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues,
) -> None:
    standin.fail_next(3, 502)
    services = make_services(failure_threshold=3, cooldown_s=0.5)
    for _ in range(3):
        assert _run(_job(*make_message()), services, queues).error_code == "exotel_unavailable"
    delayed = _run(_job(*make_message()), services, queues)
    assert delayed.error_code == "circuit_open"
    assert queues.retried[-1][0].attempt == 1  # never tried: keeps its attempt number
    assert len(standin.sends()) == 3
    time.sleep(0.55)
    assert _run(_job(*make_message()), services, queues).outcome is Outcome.COMPLETED  # the probe closes it


def test_a_per_item_failure_marks_only_that_message_failed(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, db: psycopg.Connection[dict[str, Any]],
) -> None:
    standin.fail_recipients["+919876543211"] = (400, 1002, "recipient is not a WhatsApp user")
    good, bad = make_message(), make_message()
    services = make_services()
    assert _run(_job(*good), services, queues).outcome is Outcome.COMPLETED
    failed = _run(_job(*bad, to="+919876543211"), services, queues)
    assert failed.outcome is Outcome.DEAD_LETTERED
    assert "recipient is not a WhatsApp user" in (failed.reason or "")
    assert _row(db, good[0])["status"] == "SENT"
    bad_row = _row(db, bad[0])
    assert bad_row["status"] == "FAILED"
    assert "1002" in bad_row["error_message"]
    assert bad_row["failed_at"] is not None
    assert standin.sends()[1].status == 207


@pytest.mark.parametrize(("change", "expected"), [
    ({"to": "12"}, "to: must be a phone number"),
    ({"action": "SEND_FAX"}, "unknown action"),
    ({"text": "x" * 4097}, "text: String should have at most 4096 characters"),
])
def test_invalid_jobs_are_rejected_with_clear_reasons(
    *, make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, change: dict[str, str], expected: str,
) -> None:
    message_id, thread_id = make_message()
    result = _run(_job(message_id, thread_id, **change), make_services(), queues)
    assert result.outcome is Outcome.DEAD_LETTERED
    assert expected in (result.reason or "")
    assert standin.sends() == []


def test_a_missing_message_row_is_rejected(
    make_services: Callable[..., WhatsAppServices], standin: ExotelStandin, queues: RecordingQueues,
) -> None:
    missing = "6f1c3c2e-0000-4000-8000-000000000000"
    result = _run(_job(missing, "6f1c3c2e-0000-4000-8000-000000000001"), make_services(), queues)
    assert result.outcome is Outcome.DEAD_LETTERED
    assert result.reason == f"no communication_messages row with id {missing}"
    assert standin.sends() == []


def test_a_template_goes_with_language_code_and_policy(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues,
) -> None:
    message_id, thread_id = make_message()
    body = _job(message_id, thread_id, action="SEND_TEMPLATE", templateName="order_update", language="en",
                variables=[{"type": "body", "parameters": [{"type": "text", "text": "BX-1"}]}])
    assert _run(body, make_services(), queues).outcome is Outcome.COMPLETED
    template = standin.sends()[0].body["whatsapp"]["messages"][0]["content"]["template"]
    assert template["language"] == {"code": "en", "policy": "deterministic"}


@pytest.mark.parametrize(("priority", "queue_lane", "expected"), [
    (None, Lane.BULK, Lane.BULK), (1, Lane.BULK, Lane.HIGH), (3, Lane.BULK, Lane.HIGH), (4, Lane.BULK, Lane.BULK),
    (10, Lane.HIGH, Lane.HIGH),
])
def test_priority_maps_to_a_lane(priority: int | None, queue_lane: Lane, expected: Lane) -> None:
    assert lane_for(priority, queue_lane=queue_lane, threshold=3) is expected


def test_redis_keys_are_namespaced(redis_client: redis.Redis, make_services: Callable[..., WhatsAppServices]) -> None:
    make_services().limiter.pause(1)
    assert all(key.startswith(b"bxw:") for key in redis_client.keys("*"))


def test_a_store_without_rows_is_not_touched_by_a_rejected_job(store: PostgresStore) -> None:
    assert store.list_sends_needing_reconciliation() == []


def _take_every_bulk_slot(limiter: SlotRateLimiter) -> None:
    """What a long bulk backlog on other instances does: book every bulk slot within the max wait."""
    while True:
        try:
            limiter.book(Lane.BULK)
        except RateLimited:
            return


@pytest.mark.parametrize(("blocker", "code"), [
    ("backlog", "rate_limited"), ("pause", "rate_limited"), ("circuit", "circuit_open"),
])
def test_a_long_run_of_deferrals_never_dead_letters_a_message_after_the_max_attempts(
    *, make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, db: psycopg.Connection[dict[str, Any]],
    redis_client: redis.Redis, blocker: str, code: str,
) -> None:
    message_id, thread_id = make_message()
    services = make_services(rate_per_s=5.0, max_wait_s=0.5, failure_threshold=1, cooldown_s=60)
    if blocker == "pause":
        services.limiter.pause(60)  # another instance got Exotel's 429
    elif blocker == "circuit":
        services.circuit.record_failure()
    body = _job(message_id, thread_id)
    for _ in range(3 * 3):  # three times the max attempts
        if blocker == "backlog":
            _take_every_bulk_slot(services.limiter)
        result = _run(body, services, queues, attempts=3)
        assert (result.outcome, result.error_code) == (Outcome.RETRIED, code)
        body = queues.retried[-1][0].to_json()
    assert queues.dead == []
    assert [job.attempt for job, _ in queues.retried] == [1] * 9
    assert standin.sends() == []
    assert _row(db, message_id)["status"] == "PENDING"

    for key in redis_client.scan_iter("bxw:*"):  # the backlog drained, the pause ended, the circuit closed
        redis_client.delete(key)
    assert _run(body, services, queues, attempts=3).outcome is Outcome.COMPLETED
    assert _row(db, message_id)["status"] == "SENT"


def test_a_deferral_older_than_the_max_age_is_dead_lettered_and_can_be_replayed(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, store: PostgresStore,
) -> None:
    message_id, thread_id = make_message()
    services = make_services()
    services.limiter.pause(60)
    old = new_envelope("whatsapp", json.loads(_job(message_id, thread_id)))
    old = old.model_copy(update={"created_at": old.created_at - timedelta(hours=2)})
    result = _run(old.to_json(), services, queues, attempts=3, max_age_s=3600)
    assert result.outcome is Outcome.DEAD_LETTERED
    assert "deferred for 7200 s, longer than the 3600 s limit" in (result.reason or "")
    assert standin.sends() == []
    # The claim was released, not left behind: a replay from the dead letter may send it.
    assert store.claim_send(message_id, owner="replay", claim_s=60).outcome is SendOutcome.CLAIMED


def test_a_5xx_after_deferrals_still_counts_attempts(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues,
) -> None:
    message_id, thread_id = make_message()
    services = make_services()
    services.circuit.before_call()
    standin.fail_next(1, 503)
    result = _run(_job(message_id, thread_id), services, queues, attempts=3)
    assert (result.outcome, result.error_code) == (Outcome.RETRIED, "exotel_unavailable")
    assert queues.retried[-1][0].attempt == 2


# --- bookkeeping failures never strand a claim or lose a sid ---------------------------------------------


def _redis_down(*_args: Any, **_kwargs: Any) -> Any:
    raise redis.ConnectionError("injected: Redis unreachable")


class _BrokenMetrics:
    """A metrics sink whose Redis is gone."""

    def inc(self, name: str, amount: float = 1, **labels: Any) -> None:
        _redis_down()

    def observe(self, name: str, value: float, **labels: Any) -> None:
        _redis_down()


def _claimable(store: PostgresStore, message_id: str) -> bool:
    return store.claim_send(message_id, owner="replay", claim_s=60).outcome is SendOutcome.CLAIMED


@pytest.mark.parametrize(("component", "method"), [("circuit", "before_call"), ("limiter", "acquire")])
def test_a_redis_error_before_calling_exotel_releases_the_claim(
    *, make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, store: PostgresStore, monkeypatch: pytest.MonkeyPatch,
    component: str, method: str,
) -> None:
    message_id, thread_id = make_message()
    services = make_services()
    monkeypatch.setattr(getattr(services, component), method, _redis_down)
    with pytest.raises(redis.ConnectionError):
        _run(_job(message_id, thread_id), services, queues)
    assert standin.sends() == []
    assert _claimable(store, message_id)  # a redelivery may send it; no false "needs reconciliation"


def test_a_metrics_outage_never_changes_a_send(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, db: psycopg.Connection[dict[str, Any]],
) -> None:
    message_id, thread_id = make_message()
    services = make_services()
    services.metrics = _BrokenMetrics()
    assert _run(_job(message_id, thread_id), services, queues).outcome is Outcome.COMPLETED
    assert _row(db, message_id)["external_id"] == standin.accepted_sids()[0]


@pytest.mark.parametrize(("status", "component", "method", "code"), [
    (429, "limiter", "pause", "exotel_rate_limited"),
    (503, "circuit", "record_failure", "exotel_unavailable"),
])
def test_a_redis_error_after_exotel_refused_still_releases_the_claim(
    *, make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, store: PostgresStore, monkeypatch: pytest.MonkeyPatch,
    status: int, component: str, method: str, code: str,
) -> None:
    message_id, thread_id = make_message()
    services = make_services()
    standin.fail_next(1, status)
    monkeypatch.setattr(getattr(services, component), method, _redis_down)
    result = _run(_job(message_id, thread_id), services, queues)
    assert (result.outcome, result.error_code) == (Outcome.RETRIED, code)
    assert len(standin.sends()) == 1
    assert _claimable(store, message_id)


def test_a_redis_error_after_exotel_accepted_still_records_the_sid(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, db: psycopg.Connection[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message_id, thread_id = make_message()
    services = make_services()
    monkeypatch.setattr(services.circuit, "record_success", _redis_down)
    assert _run(_job(message_id, thread_id), services, queues).outcome is Outcome.COMPLETED
    row = _row(db, message_id)
    assert (row["status"], row["external_id"]) == ("SENT", standin.accepted_sids()[0])


def test_the_sid_is_logged_at_info_when_it_arrives_even_if_recording_it_fails(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, store: PostgresStore, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def database_down(*_args: Any, **_kwargs: Any) -> None:
        raise StoreUnavailable("injected: database unreachable")

    message_id, thread_id = make_message()
    services = make_services()
    monkeypatch.setattr(store, "complete_send", database_down)
    caplog.set_level(logging.INFO, logger="shared.whatsapp.handler")
    assert _run(_job(message_id, thread_id), services, queues).outcome is Outcome.RETRIED
    sid = standin.accepted_sids()[0]
    assert [r for r in caplog.records if r.levelno == logging.INFO and sid in r.getMessage()]


# --- a request-level 404 is a configuration problem, not the message's -----------------------------------


def test_a_404_for_a_wrong_account_sid_leaves_the_message_pending_and_a_replay_sends_it(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues, db: psycopg.Connection[dict[str, Any]],
) -> None:
    message_id, thread_id = make_message()
    misconfigured = make_services()
    misconfigured.exotel = ExotelClient(requests.Session(),
                                        replace(misconfigured.exotel.config, account_sid="wrong-sid"))
    body = _job(message_id, thread_id)
    result = _run(body, misconfigured, queues)
    assert result.outcome is Outcome.DEAD_LETTERED
    assert "404" in (result.reason or "")
    row = _row(db, message_id)
    assert (row["status"], row["failed_at"]) == ("PENDING", None)
    # The setting is fixed; the dead letter is replayed.
    assert _run(body, make_services(), queues).outcome is Outcome.COMPLETED
    assert _row(db, message_id)["external_id"] == standin.accepted_sids()[0]


# --- the half-open probe always reports back ---------------------------------------------------------------


def _half_open(services: WhatsAppServices) -> None:
    services.circuit.record_failure()  # threshold 1: open
    time.sleep(0.25)  # past the cool-down: the next caller is the probe


def test_a_probe_refused_a_send_slot_frees_the_probe_for_the_next_sender(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues,
) -> None:
    services = make_services(failure_threshold=1, cooldown_s=0.2)
    _half_open(services)
    services.limiter.pause(60)
    result = _run(_job(*make_message()), services, queues)
    assert (result.outcome, result.error_code) == (Outcome.RETRIED, "rate_limited")
    assert standin.sends() == []
    assert services.circuit.before_call() is True  # the next sender may probe at once


def test_a_429_answer_to_the_probe_closes_the_circuit(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    standin: ExotelStandin, queues: RecordingQueues,
) -> None:
    services = make_services(failure_threshold=1, cooldown_s=0.2)
    _half_open(services)
    standin.fail_next(1, 429)
    result = _run(_job(*make_message()), services, queues)
    assert (result.outcome, result.error_code) == (Outcome.RETRIED, "exotel_rate_limited")
    assert services.circuit.state() is CircuitState.CLOSED  # Exotel answered: it is up
