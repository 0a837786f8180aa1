"""Job contracts: original BullMQ shapes accepted bare or enveloped; bad input named field by field."""

import json
from pathlib import Path

import pytest

from shared.jobs import MAX_MESSAGE_BYTES, JobValidationError, new_envelope, parse_job, write_schemas

MESSAGE_ID = "0b7c3a52-5d0e-4b8e-9d43-6c1f3f0a9e01"
THREAD_ID = "4f5e6d7c-8b9a-4c0d-9e1f-2a3b4c5d6e7f"
ACCOUNT_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"

ORIGINAL_SHAPES = {
    "email": [
        {"action": "POLL_INBOX", "data": {"accountId": ACCOUNT_ID}},
        {"action": "POLL_ALL_INBOXES"},
    ],
    "whatsapp": [
        {"action": "SEND_MESSAGE", "data": {"threadId": THREAD_ID, "to": "+919876543210", "text": "Your container "
         "has arrived", "messageId": MESSAGE_ID}},
        {"action": "SEND_TEMPLATE", "data": {"threadId": THREAD_ID, "to": "919876543210", "templateName":
         "shipment_update", "language": "en", "variables": [{"type": "body", "parameters": [{"type": "text",
         "text": "BX-2026-0001"}]}], "messageId": MESSAGE_ID}},
        {"action": "SEND_MEDIA", "data": {"threadId": THREAD_ID, "to": "+44 20 7946 0958", "mediaUrl":
         "https://cdn.example.com/invoice.pdf?sig=abc", "mediaType": "document", "caption": "Invoice",
         "messageId": MESSAGE_ID}},
    ],
    "transcription": [
        {"messageId": MESSAGE_ID, "threadId": THREAD_ID, "audioUrl":
         "https://recordings.exotel.com/exotelrecordings/acme/abc.mp3", "callSid": "c5f1e2d3"},
    ],
}


@pytest.mark.parametrize(
    ("kind", "shape"), [(kind, shape) for kind, shapes in ORIGINAL_SHAPES.items() for shape in shapes]
)
def test_original_bullmq_shapes_are_accepted_bare_and_in_an_envelope(kind, shape):
    bare = parse_job(kind, json.dumps(shape), message_id="queue-message-1")
    assert bare.id == "queue-message-1"
    assert bare.attempt == 1
    assert bare.type == kind
    wrapped = parse_job(kind, bare.to_json())
    assert wrapped == bare
    wire = json.loads(wrapped.to_json())["payload"]
    key = "action" if "action" in shape else "messageId"
    assert wire[key] == shape[key]


def test_phone_numbers_are_normalised_to_e164():
    job = parse_job("whatsapp", json.dumps(ORIGINAL_SHAPES["whatsapp"][2]))
    assert job.payload.data.to == "+442079460958"


def test_envelope_keeps_id_attempt_and_trace_context():
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "x=1"}
    envelope = {"v": 1, "id": "job-1", "type": "transcription", "attempt": 3,
                "created_at": "2026-12-01T10:00:00Z", "trace": trace, "payload": ORIGINAL_SHAPES["transcription"][0]}
    job = parse_job("transcription", json.dumps(envelope))
    assert (job.id, job.attempt, job.trace.traceparent) == ("job-1", 3, trace["traceparent"])
    assert job.next_attempt().attempt == 4
    assert job.next_attempt().id == "job-1"


def _send_message(**data_overrides):
    data = dict(ORIGINAL_SHAPES["whatsapp"][0]["data"], **data_overrides)
    return {"action": "SEND_MESSAGE", "data": data}


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("whatsapp", '{"action": "SEND_MESSAGE", "data": ', "not valid JSON"),
        ("email", "[1, 2]", "must be a JSON object, not list"),
        ("whatsapp", json.dumps({"action": "SEND_FAX", "data": {}}), "action: unknown action; expected one of"),
        ("email", json.dumps({"action": "PROCESS_EMAIL", "data": {}}), "action: unknown action"),
        ("whatsapp", json.dumps({"data": {}}), "action: field required"),
        ("email", json.dumps({"action": "POLL_INBOX", "data": {}}), "data.accountId: Field required"),
        ("whatsapp", json.dumps(_send_message(text=None)), "data.text: Input should be a valid string"),
        ("whatsapp", json.dumps(_send_message(text=7)), "data.text: Input should be a valid string"),
        ("whatsapp", json.dumps(_send_message(text="x" * 4097)), "data.text: String should have at most 4096"),
        ("whatsapp", json.dumps(_send_message(to="12")), "data.to: must be a phone number"),
        ("whatsapp", json.dumps(_send_message(messageId="row-7")), "data.messageId: must be a UUID"),
        ("whatsapp", json.dumps(_send_message(extra="?")), "data.extra: Extra inputs are not permitted"),
        ("transcription", json.dumps(dict(ORIGINAL_SHAPES["transcription"][0], audioUrl="file:///etc/passwd")),
         "audioUrl: must be an absolute http(s) URL"),
        ("transcription", json.dumps({"messageId": MESSAGE_ID}), "threadId: Field required"),
        ("email", json.dumps({"v": 1, "id": "j", "type": "whatsapp", "payload": {}}), "type: expected 'email'"),
        ("whatsapp", json.dumps(_send_message(text="x" * MAX_MESSAGE_BYTES)), f"the limit is {MAX_MESSAGE_BYTES}"),
    ],
)
def test_bad_messages_give_one_clear_error_naming_the_field(kind, body, expected):
    with pytest.raises(JobValidationError) as caught:
        parse_job(kind, body)
    assert expected in str(caught.value)
    assert str(caught.value).startswith(f"invalid {kind} job: ")


def test_validation_errors_never_echo_the_input():
    secretish = "+91-SECRET-TOKEN-VALUE"
    with pytest.raises(JobValidationError) as caught:
        parse_job("whatsapp", json.dumps(_send_message(to=secretish)))
    assert secretish not in str(caught.value)


def test_new_envelope_validates_its_payload():
    job = new_envelope("email", {"action": "POLL_INBOX", "data": {"accountId": ACCOUNT_ID}})
    assert job.payload.data.account_id == ACCOUNT_ID
    with pytest.raises(JobValidationError, match="accountId"):
        new_envelope("email", {"action": "POLL_INBOX", "data": {"accountId": "nope"}})


def test_committed_json_schemas_are_current(tmp_path):
    write_schemas(tmp_path)
    committed = Path(__file__).resolve().parent.parent / "schemas"
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == sorted(p.name for p in committed.glob("*.schema.json"))
    for name in generated:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"schemas/{name} is stale: run `python -m shared.jobs`"
        )
