"""Job contracts: the versioned envelope and the payloads of the three job kinds.

A queue message is either an envelope::

    {"v": 1, "id": "...", "type": "whatsapp", "attempt": 1, "created_at": "...",
     "trace": {"traceparent": "00-...", "tracestate": ""}, "payload": {...}}

or a bare payload in the original BullMQ job data shape (``{"action": "SEND_MESSAGE", "data": {...}}``,
``{"messageId": ..., "audioUrl": ...}``), which is wrapped in a new envelope on arrival. So the main API only
changes where it enqueues. JSON Schemas generated from these models live in ``schemas/``
(``python -m shared.jobs`` rewrites them; a test fails when they are stale).
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.errors import Reject

__all__ = [
    "JOB_KINDS",
    "MAX_MESSAGE_BYTES",
    "EmailJob",
    "Envelope",
    "JobKind",
    "JobValidationError",
    "PollAllInboxes",
    "PollInbox",
    "SendMedia",
    "SendMessage",
    "SendTemplate",
    "TraceContext",
    "TranscriptionJob",
    "WhatsAppJob",
    "new_envelope",
    "parse_job",
    "write_schemas",
]

#: Largest decoded message body we accept. Queue messages are at most 64 KiB as stored, and host.json's
#: base64 encoding turns 48 KiB into 64 KiB.
MAX_MESSAGE_BYTES = 48 * 1024

JobKind = Literal["email", "whatsapp", "transcription"]
JOB_KINDS: tuple[JobKind, ...] = ("email", "whatsapp", "transcription")


class JobValidationError(Reject):
    """The message is not a valid job; the text names each bad field. Dead-lettered, never retried."""

    code = "invalid_job"


def _phone_number(value: str) -> str:
    """Normalise a recipient to E.164 (``+919876543210``); the seed sent digits with or without ``+``."""
    compact = re.sub(r"[\s().-]", "", value)
    if not re.fullmatch(r"\+?\d{8,15}", compact):
        raise ValueError("must be a phone number in international format, e.g. +919876543210")
    try:
        parsed = phonenumbers.parse(compact if compact.startswith("+") else "+" + compact, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("must be a phone number in international format, e.g. +919876543210") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError("is not a possible phone number for its country code")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _web_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return value


PhoneNumber = Annotated[str, AfterValidator(_phone_number)]
WebUrl = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_web_url)]
def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("must be a UUID") from None


Uuid = Annotated[str, Field(json_schema_extra={"format": "uuid"}), AfterValidator(_uuid)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True, frozen=True)


# --- Email poller: {"action": "POLL_INBOX", "data": {"accountId": ...}} --------------------------------


class PollInboxData(_Model):
    account_id: Uuid = Field(alias="accountId")


class PollInbox(_Model):
    """Poll one inbox (the seed's ``POLL_INBOX``)."""

    action: Literal["POLL_INBOX"]
    data: PollInboxData


class PollAllInboxes(_Model):
    """Fan out polls to every due inbox (the seed's ``POLL_ALL_INBOXES``, e.g. from "poll now")."""

    action: Literal["POLL_ALL_INBOXES"]
    data: dict[str, Any] | None = None


EmailJob = Annotated[PollInbox | PollAllInboxes, Field(discriminator="action")]


# --- WhatsApp processor: {"action": "SEND_MESSAGE"|"SEND_TEMPLATE"|"SEND_MEDIA", "data": {...}} --------


class _SendData(_Model):
    thread_id: Uuid = Field(alias="threadId")
    to: PhoneNumber
    message_id: Uuid = Field(alias="messageId", description="id of the pre-created communication_messages row")


class SendMessageData(_SendData):
    # WhatsApp's limit for a text body is 4,096 characters.
    text: str = Field(min_length=1, max_length=4096)


class SendTemplateData(_SendData):
    template_name: str = Field(alias="templateName", min_length=1, max_length=512, pattern=r"^[a-z0-9_]+$")
    language: str = Field(min_length=2, max_length=15, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})?$")
    variables: list[dict[str, Any]] = Field(
        default_factory=list, max_length=20, description="template components, passed to Exotel as given"
    )


class SendMediaData(_SendData):
    media_url: WebUrl = Field(alias="mediaUrl")
    media_type: Literal["image", "document", "audio", "video"] = Field(alias="mediaType")
    caption: str | None = Field(None, max_length=1024)


class _WhatsAppAction(_Model):
    # The seed's BullMQ priority: 1 is highest, 10 lowest. It picks the queue lane (see README).
    priority: int | None = Field(None, ge=1, le=10)


class SendMessage(_WhatsAppAction):
    action: Literal["SEND_MESSAGE"]
    data: SendMessageData


class SendTemplate(_WhatsAppAction):
    action: Literal["SEND_TEMPLATE"]
    data: SendTemplateData


class SendMedia(_WhatsAppAction):
    action: Literal["SEND_MEDIA"]
    data: SendMediaData


WhatsAppJob = Annotated[SendMessage | SendTemplate | SendMedia, Field(discriminator="action")]


# --- Transcription: {"messageId", "threadId", "audioUrl", "callSid"} -----------------------------------


class TranscriptionJob(_Model):
    message_id: Uuid = Field(alias="messageId")
    thread_id: Uuid = Field(alias="threadId")
    audio_url: WebUrl = Field(alias="audioUrl")
    call_sid: str = Field(alias="callSid", min_length=1, max_length=128)


# --- Envelope ------------------------------------------------------------------------------------------

PayloadT = TypeVar("PayloadT")


class TraceContext(_Model):
    """W3C trace context of the enqueuer, so each job's span links to the request that caused it."""

    traceparent: str = Field(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
    tracestate: str = Field("", max_length=512)


class Envelope(_Model, Generic[PayloadT]):
    """A job as it travels on a queue: identity, attempt count, trace context and the payload."""

    v: Literal[1] = 1
    id: str = Field(min_length=1, max_length=128)
    type: JobKind
    attempt: int = Field(1, ge=1, le=1000)
    created_at: datetime
    trace: TraceContext | None = None
    payload: PayloadT

    def next_attempt(self) -> Envelope[PayloadT]:
        """A copy for the next try (``attempt + 1``), same id and trace."""
        return self.model_copy(update={"attempt": self.attempt + 1})

    def to_json(self) -> str:
        """Serialise with the wire names (``accountId``, ``messageId`` ...)."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


_PAYLOADS: dict[JobKind, Any] = {
    "email": EmailJob,
    "whatsapp": WhatsAppJob,
    "transcription": TranscriptionJob,
}


def new_envelope(
    kind: JobKind, payload: Any, *, job_id: str | None = None, trace: TraceContext | None = None
) -> Envelope[Any]:
    """Wrap a payload (a model or its wire-shaped dict) in a fresh envelope, validating it."""
    raw = payload.model_dump(by_alias=True, exclude_none=True) if isinstance(payload, BaseModel) else payload
    return _validate(
        kind,
        {
            "v": 1,
            "id": job_id or str(uuid.uuid4()),
            "type": kind,
            "attempt": 1,
            "created_at": datetime.now(UTC).isoformat(),
            "trace": trace.model_dump() if trace else None,
            "payload": raw,
        },
        prefix="",
    )


def parse_job(kind: JobKind, body: str | bytes, *, message_id: str | None = None) -> Envelope[Any]:
    """Decode and validate a queue message body as a job of ``kind``.

    Accepts an envelope or a bare payload in the original shape (then ``message_id`` becomes the job id).
    Raises ``JobValidationError`` with one clear message naming each bad field.
    """
    size = len(body.encode("utf-8") if isinstance(body, str) else body)
    if size > MAX_MESSAGE_BYTES:
        raise JobValidationError(f"invalid {kind} job: message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobValidationError(f"invalid {kind} job: message body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise JobValidationError(
            f"invalid {kind} job: message body must be a JSON object, not {type(data).__name__}"
        )
    if "v" in data and "payload" in data:
        if data.get("type") != kind:
            raise JobValidationError(
                f"invalid {kind} job: type: expected {kind!r} on this queue, got {data.get('type')!r}"
            )
        return _validate(kind, data, prefix="")
    envelope = {
        "v": 1,
        "id": message_id or str(uuid.uuid4()),
        "type": kind,
        "attempt": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "payload": data,
    }
    return _validate(kind, envelope, prefix="payload.")


def _validate(kind: JobKind, data: dict[str, Any], *, prefix: str) -> Envelope[Any]:
    model = Envelope[_PAYLOADS[kind]]  # type: ignore[valid-type]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise JobValidationError(f"invalid {kind} job: {_describe(exc, prefix)}") from None


def _describe(exc: ValidationError, prefix: str) -> str:
    problems = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        # A bare payload is wrapped before validation: report its fields as the sender wrote them, and drop
        # pydantic's union-branch segment (the action name) from the path.
        if prefix and (loc + ".").startswith(prefix):
            loc = loc[len(prefix) :]
        for tag in ("POLL_INBOX.", "POLL_ALL_INBOXES.", "SEND_MESSAGE.", "SEND_TEMPLATE.", "SEND_MEDIA."):
            loc = loc.replace(tag, "")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "union_tag_invalid":
            loc = f"{loc}.action" if loc else "action"
            expected = error.get("ctx", {}).get("expected_tags", "")
            message = f"unknown action; expected one of {expected}"
        elif error["type"] == "union_tag_not_found":
            loc = f"{loc}.action" if loc else "action"
            message = "field required"
        problems.append(f"{loc or 'body'}: {message}")
    return "; ".join(problems)


def write_schemas(directory: Path) -> list[Path]:
    """Write the JSON Schema of each job kind's envelope and bare payload into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, payload in _PAYLOADS.items():
        for name, model in ((f"{kind}-job", payload), (f"{kind}-envelope", Envelope[payload])):  # type: ignore[valid-type]
            schema = TypeAdapter(model).json_schema(by_alias=True, mode="validation")
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            schema["$id"] = f"https://banxway.example/schemas/{name}.schema.json"
            path = directory / f"{name}.schema.json"
            path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "schemas"
    for written_path in write_schemas(target):
        sys.stdout.write(f"wrote {written_path}\n")
