"""Queue operations against Azurite: encoding as host.json says, retry copies, dead letters with reasons."""

import base64
import json

import pytest

from shared.jobs import MAX_MESSAGE_BYTES
from shared.queues import DEAD_LETTER_CONTAINER, DeadLetter, QueueOps, poison_queue_name

ACCOUNT_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
POLL = {"action": "POLL_INBOX", "data": {"accountId": ACCOUNT_ID}}


@pytest.fixture
def ops(queue_service, blob_service):
    return QueueOps(queue_service, encoding="base64", blob_service=blob_service)


def _raw_messages(queue_service, queue, count=32):
    """The stored text of each message, without any decoding: what the host reads."""
    return [m.content for m in queue_service.get_queue_client(queue).receive_messages(max_messages=count)]


def test_messages_are_stored_base64_encoded_as_the_host_expects(ops, queue_service, unique_queue_name):
    queue = unique_queue_name()
    ops.send(queue, POLL)
    (stored,) = _raw_messages(queue_service, queue)
    assert json.loads(base64.b64decode(stored)) == POLL


def test_a_message_put_by_hand_in_base64_decodes_like_ours(ops, queue_service, unique_queue_name):
    queue = unique_queue_name()
    queue_service.get_queue_client(queue).send_message(base64.b64encode(json.dumps(POLL).encode()).decode())
    ops.send(queue, json.dumps(POLL))
    bodies = [m.content for m in ops.client(queue).receive_messages(max_messages=2)]
    assert [json.loads(b) for b in bodies] == [POLL, POLL]


def test_non_ascii_bodies_round_trip_exactly(ops, unique_queue_name):
    queue = unique_queue_name()
    text = json.dumps({"note": "दस्तावेज़ — 書類 ✓"}, ensure_ascii=False)
    ops.send(queue, text)
    (message,) = list(ops.client(queue).receive_messages(max_messages=1))
    assert message.content.decode("utf-8") == text


def test_enqueue_wraps_the_payload_in_a_validated_envelope(ops, unique_queue_name):
    queue = unique_queue_name()
    envelope = ops.enqueue(queue, "email", POLL, job_id="poll-1")
    (message,) = list(ops.client(queue).receive_messages(max_messages=1))
    body = json.loads(message.content)
    assert body["id"] == envelope.id == "poll-1"
    assert body["type"] == "email"
    assert body["attempt"] == 1
    assert body["payload"] == POLL


def test_retry_later_puts_back_an_invisible_copy_with_the_next_attempt(ops, queue_service, unique_queue_name):
    queue = unique_queue_name()
    envelope = ops.enqueue(queue, "email", POLL)
    list(ops.client(queue).receive_messages(max_messages=1, visibility_timeout=60))  # the original, in flight
    ops.retry_later(queue, envelope, delay_s=30)
    assert list(ops.client(queue).receive_messages(max_messages=32)) == []  # nothing visible yet
    assert queue_service.get_queue_client(queue).get_queue_properties().approximate_message_count == 2


def test_dead_letter_goes_to_the_poison_queue_with_reason_and_original_body(ops, unique_queue_name):
    queue = unique_queue_name()
    original = '{"action": "SEND_FAX"}'
    ops.dead_letter(queue, original, reason="unknown action", error_class="JobValidationError", attempts=1,
                    job_id="j-1")
    (message,) = list(ops.client(poison_queue_name(queue)).receive_messages(max_messages=1))
    letter = DeadLetter.parse(message.content.decode())
    assert letter.body == original
    assert (letter.reason, letter.error_class, letter.attempts, letter.queue, letter.job_id) == (
        "unknown action", "JobValidationError", 1, queue, "j-1",
    )
    assert letter.dead_lettered_at
    assert ops.read_dead_letter_body(letter) == original


def test_a_dead_letter_too_large_to_wrap_keeps_its_body_in_blob_storage(ops, blob_service, unique_queue_name):
    queue = unique_queue_name()
    # Quotes double in size when the body is embedded as a JSON string, so this cannot fit wrapped.
    original = '"' * (MAX_MESSAGE_BYTES - 10)
    ops.dead_letter(queue, original, reason="too big", error_class="JobValidationError", attempts=1)
    (message,) = list(ops.client(poison_queue_name(queue)).receive_messages(max_messages=1))
    letter = DeadLetter.parse(message.content.decode())
    assert letter.body is None
    assert letter.body_blob.startswith(f"{DEAD_LETTER_CONTAINER}/{queue}/")
    assert ops.read_dead_letter_body(letter) == original


def test_a_host_made_poison_message_parses_as_its_bare_body():
    assert DeadLetter.parse('{"action": "POLL_INBOX"}') == DeadLetter(body='{"action": "POLL_INBOX"}')
    assert DeadLetter.parse("not json").body == "not json"


def test_messages_over_the_limit_are_refused_before_sending(ops, unique_queue_name):
    with pytest.raises(ValueError, match="limit"):
        ops.send(unique_queue_name(), "x" * (MAX_MESSAGE_BYTES + 1))
