"""The job boundary: each handler outcome ends in exactly one place, with nothing lost."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.errors import Reject, RetryLater
from shared.jobs import MAX_MESSAGE_BYTES
from shared.outcomes import Outcome, RetryPolicy, full_jitter_delay_s, run_job
from shared.queues import DeadLetter, QueueOps, poison_queue_name

MESSAGE_ID = "0b7c3a52-5d0e-4b8e-9d43-6c1f3f0a9e01"
THREAD_ID = "4f5e6d7c-8b9a-4c0d-9e1f-2a3b4c5d6e7f"
SEND = {"action": "SEND_MESSAGE", "data": {"threadId": THREAD_ID, "to": "+919876543210", "text": "hello",
                                           "messageId": MESSAGE_ID}}
POLICY = RetryPolicy(max_attempts=3, base_delay_s=1.0, max_delay_s=5.0)


class Recorder:
    def __init__(self):
        self.results = []

    def after_job(self, result):
        self.results.append(result)


@pytest.fixture
def ops(queue_service, blob_service):
    return QueueOps(queue_service, encoding="base64", blob_service=blob_service)


def _run(ops, queue, body, handler, observers=()):
    return run_job(kind="whatsapp", queue=queue, body=body, message_id="qm-1", handler=handler, queues=ops,
                   policy=POLICY, observers=observers)


def _drain(ops, queue, visibility_timeout=1):
    return [m.content.decode() for m in ops.client(queue).receive_messages(max_messages=32,
                                                                            visibility_timeout=visibility_timeout)]


def _count(queue_service, queue):
    try:
        return queue_service.get_queue_client(queue).get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        return 0  # never created: nothing was sent to it


def test_success_calls_the_handler_once_and_enqueues_nothing(ops, queue_service, unique_queue_name):
    queue = unique_queue_name()
    seen = []
    recorder = Recorder()
    result = _run(ops, queue, json.dumps(SEND), seen.append, observers=[recorder])
    assert result.outcome is Outcome.COMPLETED
    assert [job.payload.data.message_id for job in seen] == [MESSAGE_ID]
    assert recorder.results == [result]
    assert _count(queue_service, queue) == 0


def test_retry_later_re_enqueues_with_the_next_attempt_and_at_least_retry_after(
    ops, queue_service, unique_queue_name
):
    queue = unique_queue_name()

    def rate_limited(job):
        raise RetryLater("exotel 429", retry_after_s=3)

    result = _run(ops, queue, json.dumps(SEND), rate_limited)
    assert result.outcome is Outcome.RETRIED
    assert result.delay_s >= 3
    assert _drain(ops, queue) == []  # invisible until the delay passes
    assert _count(queue_service, queue) == 1
    assert _count(queue_service, poison_queue_name(queue)) == 0


def test_the_retried_copy_carries_the_next_attempt(ops, unique_queue_name):
    queue = unique_queue_name()
    calls = []

    def flaky(job):
        calls.append(job.attempt)
        if job.attempt == 1:
            raise RetryLater("timeout", retry_after_s=0)

    policy = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)
    run_job(kind="whatsapp", queue=queue, body=json.dumps(SEND), message_id="qm-1", handler=flaky, queues=ops,
            policy=policy)
    (copy,) = _drain(ops, queue)
    again = run_job(kind="whatsapp", queue=queue, body=copy, message_id="qm-2", handler=flaky, queues=ops,
                    policy=policy)
    assert calls == [1, 2]
    assert again.outcome is Outcome.COMPLETED
    assert json.loads(copy)["id"] == "qm-1"  # the job keeps its identity across attempts


def test_retries_exhausted_end_in_the_dead_letter_with_the_last_reason(ops, unique_queue_name):
    queue = unique_queue_name()
    body = json.dumps({"v": 1, "id": "job-9", "type": "whatsapp", "attempt": 3,
                       "created_at": "2026-12-01T00:00:00Z", "payload": SEND})

    def always_5xx(job):
        raise RetryLater("exotel answered 503")

    result = _run(ops, queue, body, always_5xx)
    assert result.outcome is Outcome.DEAD_LETTERED
    assert _drain(ops, queue) == []
    (poisoned,) = _drain(ops, poison_queue_name(queue))
    letter = DeadLetter.parse(poisoned)
    assert letter.reason == "retries exhausted after 3 attempts: exotel answered 503"
    assert letter.attempts == 3
    assert letter.job_id == "job-9"
    assert letter.body == body


def test_reject_dead_letters_at_once(ops, unique_queue_name):
    queue = unique_queue_name()

    def missing_row(job):
        raise Reject(f"communication_messages row {job.payload.data.message_id} does not exist")

    result = _run(ops, queue, json.dumps(SEND), missing_row)
    assert result.outcome is Outcome.DEAD_LETTERED
    (poisoned,) = _drain(ops, poison_queue_name(queue))
    letter = DeadLetter.parse(poisoned)
    assert letter.reason == f"communication_messages row {MESSAGE_ID} does not exist"
    assert letter.error_class == "Reject"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "message body is not valid JSON"),
        (json.dumps({"action": "SEND_FAX", "data": {}}), "action: unknown action"),
        (json.dumps({"action": "SEND_MESSAGE", "data": {"to": "+919876543210"}}), "data.threadId: Field required"),
        (json.dumps({"action": "SEND_MESSAGE", "data": dict(SEND["data"], text=["hi"])}),
         "data.text: Input should be a valid string"),
        ("x" * (MAX_MESSAGE_BYTES + 1), f"the limit is {MAX_MESSAGE_BYTES}"),
    ],
    ids=["malformed-json", "unknown-action", "missing-field", "wrong-type", "oversized"],
)
def test_invalid_messages_are_dead_lettered_with_the_validation_error(ops, unique_queue_name, body, reason):
    queue = unique_queue_name()
    called = []
    result = _run(ops, queue, body, called.append)
    assert called == []
    assert result.outcome is Outcome.DEAD_LETTERED
    assert reason in result.reason
    (poisoned,) = _drain(ops, poison_queue_name(queue))
    letter = DeadLetter.parse(poisoned)
    assert reason in letter.reason
    assert letter.error_class == "JobValidationError"
    assert ops.read_dead_letter_body(letter) == body  # nothing lost: the original is replayable


def test_unexpected_exceptions_propagate_to_the_host_and_enqueue_nothing(ops, queue_service, unique_queue_name):
    queue = unique_queue_name()

    def bug(job):
        raise ZeroDivisionError("oops")

    with pytest.raises(ZeroDivisionError):
        _run(ops, queue, json.dumps(SEND), bug)
    assert _count(queue_service, queue) == 0
    assert _count(queue_service, poison_queue_name(queue)) == 0


def test_a_failing_observer_does_not_change_the_outcome(ops, unique_queue_name):
    class Broken:
        def after_job(self, result):
            raise RuntimeError("metrics down")

    result = _run(ops, unique_queue_name(), json.dumps(SEND), lambda _job: None, observers=[Broken()])
    assert result.outcome is Outcome.COMPLETED


@pytest.mark.parametrize("attempt", [1, 2, 3, 10, 30])
def test_full_jitter_delay_stays_within_the_exponential_ceiling(attempt):
    policy = RetryPolicy(max_attempts=50, base_delay_s=2.0, max_delay_s=300.0)
    ceiling = min(300.0, 2.0 * 2 ** (attempt - 1))
    assert full_jitter_delay_s(attempt, policy, rng=lambda: 0.0) == 0.0
    assert full_jitter_delay_s(attempt, policy, rng=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)


def test_retry_after_is_a_floor_for_the_delay():
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=4.0)
    assert full_jitter_delay_s(1, policy, retry_after_s=42.0, rng=lambda: 0.5) == 42.0


def test_a_deferral_keeps_the_attempt_number(ops, unique_queue_name):
    queue = unique_queue_name()
    body = json.dumps({"v": 1, "id": "job-3", "type": "whatsapp", "attempt": 3,
                       "created_at": datetime.now(UTC).isoformat(), "payload": SEND})

    def rate_limited(job):
        raise RetryLater("rate limit: no slot within 2 s", retry_after_s=0, counts_attempt=False)

    # Attempt 3 of 3: a counted retry would dead-letter; a deferral never tried the job, so it goes back.
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)
    result = run_job(kind="whatsapp", queue=queue, body=body, message_id="qm-1", handler=rate_limited,
                     queues=ops, policy=policy)
    assert result.outcome is Outcome.RETRIED
    (copy,) = _drain(ops, queue)
    assert json.loads(copy)["attempt"] == 3


def test_deferrals_end_in_the_dead_letter_once_the_job_is_too_old(ops, unique_queue_name):
    queue = unique_queue_name()
    created = datetime.now(UTC) - timedelta(hours=25)
    body = json.dumps({"v": 1, "id": "job-4", "type": "whatsapp", "attempt": 1,
                       "created_at": created.isoformat(), "payload": SEND})

    def circuit_open(job):
        raise RetryLater("exotel circuit open", retry_after_s=30, counts_attempt=False)

    result = run_job(kind="whatsapp", queue=queue, body=body, message_id="qm-1", handler=circuit_open,
                     queues=ops, policy=RetryPolicy(max_age_s=24 * 3600))
    assert result.outcome is Outcome.DEAD_LETTERED
    (poisoned,) = _drain(ops, poison_queue_name(queue))
    letter = DeadLetter.parse(poisoned)
    assert letter.reason.startswith("deferred for ")
    assert letter.reason.endswith("exotel circuit open")


_VALID = {
    "email": {"action": "POLL_INBOX", "data": {"accountId": THREAD_ID}},
    "whatsapp": SEND,
    "transcription": {"messageId": MESSAGE_ID, "threadId": THREAD_ID,
                      "audioUrl": "https://recordings.exotel.com/exotelrecordings/acme/call.mp3", "callSid": "c1"},
}
# For each kind: a payload missing a field, and one with a wrong type, and the field the error must name.
_MISSING = {
    "email": ({"action": "POLL_INBOX", "data": {}}, "data.accountId"),
    "whatsapp": ({"action": "SEND_MEDIA", "data": dict(SEND["data"], mediaType="image")}, "data.mediaUrl"),
    "transcription": ({k: v for k, v in _VALID["transcription"].items() if k != "callSid"}, "callSid"),
}
_WRONG_TYPE = {
    "email": ({"action": "POLL_INBOX", "data": {"accountId": 42}}, "data.accountId"),
    "whatsapp": ({"action": "SEND_MESSAGE", "data": dict(SEND["data"], to=919876543210)}, "data.to"),
    "transcription": (dict(_VALID["transcription"], audioUrl=["x"]), "audioUrl"),
}
_UNKNOWN_ACTION = {"email": {"action": "PROCESS_EMAIL", "data": {}}, "whatsapp": {"action": "PROCESS_INBOUND"}}


def _bad_bodies():
    for kind in ("email", "whatsapp", "transcription"):
        yield kind, "malformed-json", json.dumps(_VALID[kind])[:-1], "message body is not valid JSON"
        if kind in _UNKNOWN_ACTION:
            yield kind, "unknown-action", json.dumps(_UNKNOWN_ACTION[kind]), "action: unknown action"
        payload, field = _MISSING[kind]
        yield kind, "missing-field", json.dumps(payload), f"{field}: Field required"
        payload, field = _WRONG_TYPE[kind]
        yield kind, "wrong-type", json.dumps(payload), f"{field}: "
        yield kind, "oversized", json.dumps(dict(_VALID[kind], pad="x" * MAX_MESSAGE_BYTES)), "the limit is"


@pytest.mark.parametrize(("kind", "defect", "body", "reason"), list(_bad_bodies()),
                         ids=[f"{k}-{d}" for k, d, _, _ in _bad_bodies()])
def test_every_kind_of_bad_message_is_dead_lettered_naming_what_is_wrong(ops, unique_queue_name, kind, defect,
                                                                         body, reason):
    queue = unique_queue_name()
    called = []
    result = run_job(kind=kind, queue=queue, body=body, message_id="qm-1", handler=called.append, queues=ops,
                     policy=POLICY)
    assert called == []
    assert result.outcome is Outcome.DEAD_LETTERED
    (poisoned,) = _drain(ops, poison_queue_name(queue))
    letter = DeadLetter.parse(poisoned)
    assert reason in letter.reason
    assert letter.reason.startswith(f"invalid {kind} job: ")
    assert ops.read_dead_letter_body(letter) == body
