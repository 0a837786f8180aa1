"""Queue operations: enqueue, retry later, dead-letter — encoded exactly as host.json says.

The Functions host decodes queue messages with ``extensions.queues.messageEncoding`` (``base64`` here), so
every message we put on a queue is encoded the same way: a message sent by this module, by the Node API, or
by hand with ``az storage queue message put --content $(echo -n '{...}' | base64)`` decodes to the same body.

Dead letters go to ``<queue>-poison`` — the queue the host itself uses after ``maxDequeueCount`` — wrapped
with the reason, so operators have one place to look and one command to replay. A dead letter whose wrapped
form would not fit in a queue message keeps its body in the ``dead-letters`` blob container instead.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import (
    BinaryBase64DecodePolicy,
    BinaryBase64EncodePolicy,
    QueueClient,
    QueueServiceClient,
)

from shared.jobs import MAX_MESSAGE_BYTES, Envelope, JobKind, TraceContext, new_envelope

__all__ = [
    "DEAD_LETTER_CONTAINER",
    "MAX_VISIBILITY_DELAY_S",
    "DeadLetter",
    "MessageEncoding",
    "QueueOps",
    "poison_queue_name",
]

log = logging.getLogger(__name__)

MessageEncoding = Literal["base64", "none"]

#: Blob container for dead-letter bodies too large to wrap in a queue message.
DEAD_LETTER_CONTAINER = "dead-letters"
#: A visibility delay must stay below the message's time to live (7 days by default).
MAX_VISIBILITY_DELAY_S = 6 * 24 * 3600
_MAX_REASON_CHARS = 2000


def poison_queue_name(queue: str) -> str:
    """The host's poison queue for ``queue``; ours too."""
    return f"{queue}-poison"


@dataclass(frozen=True)
class DeadLetter:
    """A message on a ``-poison`` queue: ours (with a reason) or the host's (the bare original body)."""

    body: str | None
    reason: str | None = None
    error_class: str | None = None
    attempts: int | None = None
    queue: str | None = None
    job_id: str | None = None
    dead_lettered_at: str | None = None
    body_blob: str | None = None
    body_base64: str | None = None

    @classmethod
    def parse(cls, content: str | bytes) -> DeadLetter:
        """Read a poison-queue message body. A body we did not wrap is the original message itself.

        A bare body that is not UTF-8 text (the host copies what it could not process) is kept as base64.
        """
        if isinstance(content, bytes):
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                return cls(body=None, body_base64=base64.b64encode(content).decode("ascii"))
        else:
            text = content
        try:
            data = json.loads(text)
        except ValueError:
            return cls(body=text)
        if not isinstance(data, dict) or not isinstance(data.get("deadLetter"), dict):
            return cls(body=text)
        meta = data["deadLetter"]
        return cls(
            body=data.get("body"),
            reason=meta.get("reason"),
            error_class=meta.get("errorClass"),
            attempts=meta.get("attempts"),
            queue=meta.get("queue"),
            job_id=meta.get("jobId"),
            dead_lettered_at=meta.get("at"),
            body_blob=data.get("bodyBlob"),
            body_base64=data.get("bodyBase64"),
        )


class _LenientBase64DecodePolicy(BinaryBase64DecodePolicy):
    """Base64 like the host, but a message that is not base64 comes back as its raw text.

    The host moves a message it cannot decode to ``-poison`` as it was stored; one such message must not
    make every listing, replay or purge of that queue fail.
    """

    def decode(self, content: str, response: Any) -> bytes:  # noqa: ARG002 - the SDK's signature
        try:
            return base64.b64decode(content.encode("utf-8"), validate=True)
        except (ValueError, TypeError):
            return content.encode("utf-8")


class QueueOps:
    """Send, retry and dead-letter messages on Azure Storage queues (Azurite locally).

    Receives its clients; never builds them. ``encoding`` must match host.json's ``messageEncoding``.
    """

    def __init__(
        self,
        service: QueueServiceClient,
        *,
        encoding: MessageEncoding = "base64",
        blob_service: BlobServiceClient | None = None,
    ) -> None:
        self._service = service
        self._encoding = encoding
        self._blob_service = blob_service
        self._clients: dict[str, QueueClient] = {}

    def client(self, queue: str) -> QueueClient:
        """A client for ``queue`` that encodes and decodes like the host."""
        client = self._clients.get(queue)
        if client is None:
            if self._encoding == "base64":
                decode = _LenientBase64DecodePolicy()
                client = self._service.get_queue_client(
                    queue, message_encode_policy=BinaryBase64EncodePolicy(), message_decode_policy=decode
                )
            else:
                client = self._service.get_queue_client(queue)
            self._clients[queue] = client
        return client

    def send(
        self,
        queue: str,
        body: str | bytes | Mapping[str, Any],
        *,
        delay_s: float = 0,
        time_to_live_s: int | None = None,
    ) -> str:
        """Put one message on ``queue`` (created if missing), visible after ``delay_s``. Returns its id.

        ``bytes`` are sent as they are (a replayed body that is not UTF-8 text); that needs base64 encoding.
        """
        if isinstance(body, bytes):
            data = body
        else:
            text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"), ensure_ascii=False)
            data = text.encode("utf-8")
        if len(data) > MAX_MESSAGE_BYTES:
            raise ValueError(f"message is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
        content: bytes | str = data if self._encoding == "base64" else data.decode("utf-8")
        visibility = max(0, min(round(delay_s), MAX_VISIBILITY_DELAY_S))
        client = self.client(queue)
        try:
            sent = client.send_message(content, visibility_timeout=visibility, time_to_live=time_to_live_s)
        except ResourceNotFoundError:
            self._create(client)
            sent = client.send_message(content, visibility_timeout=visibility, time_to_live=time_to_live_s)
        return str(sent.id)

    def enqueue(
        self,
        queue: str,
        kind: JobKind,
        payload: Any,
        *,
        job_id: str | None = None,
        trace: TraceContext | None = None,
        delay_s: float = 0,
    ) -> Envelope[Any]:
        """Validate ``payload`` as a ``kind`` job, wrap it in an envelope and send it."""
        envelope = new_envelope(kind, payload, job_id=job_id, trace=trace)
        self.send(queue, envelope.to_json(), delay_s=delay_s)
        return envelope

    def retry_later(
        self, queue: str, envelope: Envelope[Any], *, delay_s: float, count_attempt: bool = True
    ) -> Envelope[Any]:
        """Put a copy of the job back, visible after ``delay_s``: with ``attempt + 1``, or the same attempt for a
        deferral (``count_attempt=False``: the job was never tried)."""
        retry = envelope.next_attempt() if count_attempt else envelope
        self.send(queue, retry.to_json(), delay_s=delay_s)
        return retry

    def dead_letter(
        self,
        queue: str,
        body: str | bytes,
        *,
        reason: str,
        error_class: str,
        attempts: int,
        job_id: str | None = None,
    ) -> str:
        """Move a message to ``<queue>-poison`` with the reason; the original body is kept byte for byte.

        A body that is not UTF-8 text is kept as ``bodyBase64``; one too large to wrap goes to blob storage.
        """
        meta = {
            "queue": queue,
            "reason": reason[:_MAX_REASON_CHARS],
            "errorClass": error_class,
            "attempts": attempts,
            "jobId": job_id,
            "at": datetime.now(UTC).isoformat(),
        }
        raw = body.encode("utf-8") if isinstance(body, str) else body
        try:
            record: dict[str, Any] = {"deadLetter": meta, "body": raw.decode("utf-8")}
        except UnicodeDecodeError:
            record = {"deadLetter": meta, "body": None, "bodyBase64": base64.b64encode(raw).decode("ascii")}
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
            record = {"deadLetter": meta, "body": None, "bodyBlob": self._store_body(queue, raw)}
            text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        # Dead letters never expire: an operator decides what happens to them.
        return self.send(poison_queue_name(queue), text, time_to_live_s=-1)

    def read_dead_letter_body(self, letter: DeadLetter) -> str:
        """The original body of a dead letter as text (raises ``UnicodeDecodeError`` for a binary one)."""
        return self.read_dead_letter_bytes(letter).decode("utf-8")

    def read_dead_letter_bytes(self, letter: DeadLetter) -> bytes:
        """The original body of a dead letter, byte for byte: from the message or its overflow blob."""
        if letter.body is not None:
            return letter.body.encode("utf-8")
        if letter.body_base64 is not None:
            try:
                return base64.b64decode(letter.body_base64, validate=True)
            except binascii.Error as exc:
                raise ValueError("dead letter's bodyBase64 is not valid base64") from exc
        if letter.body_blob is None:
            raise ValueError("dead letter has neither a body nor a body blob")
        container, _, name = letter.body_blob.partition("/")
        blob = self._require_blob_service().get_blob_client(container, name)
        return blob.download_blob().readall()

    def _store_body(self, queue: str, body: bytes) -> str:
        name = f"{queue}/{datetime.now(UTC):%Y/%m/%d}/{uuid.uuid4()}.txt"
        container = self._require_blob_service().get_container_client(DEAD_LETTER_CONTAINER)
        with contextlib.suppress(ResourceExistsError):
            container.create_container()
        container.upload_blob(name, body, overwrite=False)
        return f"{DEAD_LETTER_CONTAINER}/{name}"

    def _require_blob_service(self) -> BlobServiceClient:
        if self._blob_service is None:
            raise RuntimeError("a dead letter too large for a queue message needs blob storage, none configured")
        return self._blob_service

    @staticmethod
    def _create(client: QueueClient) -> None:
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
