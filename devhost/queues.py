"""Queue triggers with the host's semantics (``QueueListener`` / ``QueueProcessor`` in the WebJobs extension).

- A new batch of ``batchSize`` is received whenever this function has ``newBatchThreshold`` or fewer messages
  in flight, so at most ``batchSize + newBatchThreshold`` run at once.
- Messages are received with a lease (10 minutes, as the host does) renewed at half the lease while the
  function runs, so a long invocation is not redelivered.
- Success deletes the message. An exception makes it visible again after ``visibilityTimeout``; once
  ``dequeueCount >= maxDequeueCount`` it is copied to ``<queue>-poison`` (created on demand) and deleted.
  A message received with ``dequeueCount > maxDequeueCount`` (e.g. after a crash) goes to poison unprocessed.
- With ``messageEncoding: base64`` a body that is not valid base64 goes straight to poison, as the host's
  ``MessageDecodingFailed`` handler does. The poison copy keeps the original stored text.
- Empty polls back off exponentially (randomized) up to ``maxPollingInterval``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient, QueueServiceClient

from devhost.hostconfig import QueueOptions
from devhost.index import FunctionSpec
from devhost.invoker import Invoker

__all__ = ["DEFAULT_LEASE_S", "OutputValue", "QueueListener", "encode_body", "poison_queue_name"]

logger = logging.getLogger(__name__)

DEFAULT_LEASE_S = 600  # QueueListener receives with a 10-minute visibility timeout and renews it
_MIN_POLL_S = 0.1
_MAX_QUEUE_NAME = 63


def poison_queue_name(queue_name: str) -> str | None:
    """``<queue>-poison``, or ``None`` where the host has no poison queue (already poison, or too long)."""
    if queue_name.endswith("-poison") or len(queue_name) + len("-poison") > _MAX_QUEUE_NAME:
        return None
    return f"{queue_name}-poison"


def encode_body(body: str | bytes, message_encoding: str) -> str:
    """The stored text of a message body under host.json ``messageEncoding`` (``base64`` or ``none``)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if message_encoding == "base64":
        return base64.b64encode(raw).decode("ascii")
    return raw.decode("utf-8")


class OutputValue:
    """``func.Out`` for an output binding: the function calls ``set()``; the host sends it after success."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        """Remember the value to send."""
        self._value = val

    def get(self) -> Any:
        """The value set so far (``None`` if none)."""
        return self._value


@dataclass
class _InFlight:
    message: Any
    pop_receipt: str
    renew_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False


class QueueListener:
    """Polls one queue for one function until ``stop()``."""

    def __init__(
        self,
        spec: FunctionSpec,
        queue_name: str,
        service: QueueServiceClient,
        *,
        options: QueueOptions,
        invoker: Invoker,
        output_queues: dict[str, tuple[QueueServiceClient, str]],
        lease_s: int = DEFAULT_LEASE_S,
    ) -> None:
        self.spec = spec
        self.queue_name = queue_name
        self._service = service
        self._queue = service.get_queue_client(queue_name)
        poison = poison_queue_name(queue_name)
        self._poison: QueueClient | None = service.get_queue_client(poison) if poison else None
        self._options = options
        self._invoker = invoker
        self._outputs = output_queues
        self._lease_s = max(1, int(lease_s))
        self._in_flight: dict[str, _InFlight] = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._closed = threading.Event()  # set after the shutdown grace: stops lease renewal
        self._threads: list[threading.Thread] = []

    @property
    def options(self) -> QueueOptions:
        """The queue options this listener runs with (``concurrency`` = most invocations at once)."""
        return self._options

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the polling and lease-renewal threads."""
        for target, role in ((self._poll_loop, "poll"), (self._renew_loop, "renew")):
            thread = threading.Thread(target=target, name=f"devhost-{role}-{self.spec.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, grace_s: float) -> None:
        """Stop polling, wait up to ``grace_s`` for running invocations, then release the rest."""
        self._stopping.set()
        deadline = time.monotonic() + grace_s
        with self._changed:
            self._changed.notify_all()
            while self._in_flight and time.monotonic() < deadline:
                self._changed.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            abandoned = list(self._in_flight.values())
        self._closed.set()
        for item in abandoned:
            self._release(item, reason="host stopping")
        for thread in self._threads:
            thread.join(timeout=5)

    # --- polling ---------------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        delay_s = _MIN_POLL_S
        while not self._stopping.is_set():
            with self._changed:
                if len(self._in_flight) > self._options.new_batch_threshold:
                    self._changed.wait(timeout=1.0)
                    continue
            messages = self._receive()
            if messages:
                delay_s = _MIN_POLL_S
                for message in messages:
                    self._dispatch(message)
                continue
            delay_s = min(self._options.max_polling_interval_s, delay_s * 2)
            self._stopping.wait(delay_s * random.uniform(0.8, 1.0))  # noqa: S311 - jitter, not security

    def _receive(self) -> list[Any]:
        try:
            return list(
                self._queue.receive_messages(
                    messages_per_page=self._options.batch_size,
                    max_messages=self._options.batch_size,
                    visibility_timeout=self._lease_s,
                )
            )
        except ResourceNotFoundError:
            return []  # the host polls a missing queue as an empty one
        except AzureError as exc:
            logger.warning("Polling queue '%s' failed: %s", self.queue_name, exc)
            return []

    def _dispatch(self, message: Any) -> None:
        if self._stopping.is_set():
            self._release(_InFlight(message, message.pop_receipt, 0.0), reason="host stopping")
            return
        if message.dequeue_count > self._options.max_dequeue_count and self._poison is not None:
            self._move_to_poison(message, message.pop_receipt, message.content)
            return
        body = self._decode(message)
        if body is None:
            return
        item = _InFlight(message, message.pop_receipt, time.monotonic() + self._lease_s / 2)
        arguments: dict[str, Any] = {self.spec.trigger["name"]: self._to_queue_message(message, body)}
        outputs = {b["name"]: OutputValue() for b in self.spec.output_bindings()}
        arguments.update(outputs)
        with self._changed:
            self._in_flight[message.id] = item
        logger.info(
            "Executing 'Functions.%s' (Reason='New queue message detected on '%s'.', MessageId=%s, DequeueCount=%s)",
            self.spec.name,
            self.queue_name,
            message.id,
            message.dequeue_count,
        )
        started = time.monotonic()
        future = self._invoker.invoke(self.spec, arguments)
        future.add_done_callback(lambda done: self._complete(item, done, outputs, started))

    def _decode(self, message: Any) -> bytes | None:
        text = message.content or ""
        if self._options.message_encoding != "base64":
            return text.encode("utf-8")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            logger.warning("Message decoding has failed! Check MessageEncoding settings. MessageId=%s.", message.id)
            if self._poison is not None:
                self._move_to_poison(message, message.pop_receipt, text)
            return None

    @staticmethod
    def _to_queue_message(message: Any, body: bytes) -> QueueMessage:
        return QueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )

    # --- completion ------------------------------------------------------------------------------
    def _complete(self, item: _InFlight, done: Future[Any], outputs: dict[str, OutputValue], started: float) -> None:
        duration_ms = int((time.monotonic() - started) * 1000)
        error = done.exception() if not done.cancelled() else RuntimeError("invocation cancelled")
        if error is None:
            try:
                self._send_outputs(outputs)
            except AzureError as exc:
                error = exc
        with item.lock:
            if item.finished:  # released at shutdown: the message is someone else's now
                self._forget(item)
                return
            item.finished = True
            if error is None:
                logger.info("Executed 'Functions.%s' (Succeeded, Duration=%sms)", self.spec.name, duration_ms)
                self._delete(item.message, item.pop_receipt)
            else:
                logger.error(
                    "Executed 'Functions.%s' (Failed, Duration=%sms): %r",
                    self.spec.name,
                    duration_ms,
                    error,
                    exc_info=error,
                )
                self._after_failure(item)
        self._forget(item)

    def _after_failure(self, item: _InFlight) -> None:
        message = item.message
        if message.dequeue_count >= self._options.max_dequeue_count and self._poison is not None:
            self._move_to_poison(message, item.pop_receipt, message.content)
            return
        try:
            self._queue.update_message(
                message.id, item.pop_receipt, visibility_timeout=int(self._options.visibility_timeout_s)
            )
        except AzureError as exc:
            logger.warning("Releasing message %s failed: %s", message.id, exc)

    def _send_outputs(self, outputs: dict[str, OutputValue]) -> None:
        for name, out in outputs.items():
            value = out.get()
            if value is None or name not in self._outputs:
                continue
            service, queue_name = self._outputs[name]
            client = service.get_queue_client(queue_name)
            for item in value if isinstance(value, list) else [value]:
                text = encode_body(item, self._options.message_encoding)
                try:
                    client.send_message(text)
                except ResourceNotFoundError:
                    self._create(client)
                    client.send_message(text)

    def _forget(self, item: _InFlight) -> None:
        with self._changed:
            self._in_flight.pop(item.message.id, None)
            self._changed.notify_all()

    # --- storage operations ----------------------------------------------------------------------
    def _move_to_poison(self, message: Any, pop_receipt: str, text: str) -> None:
        assert self._poison is not None
        logger.warning(
            "Message has reached MaxDequeueCount of %s. Moving message to queue '%s'. MessageId=%s",
            self._options.max_dequeue_count,
            self._poison.queue_name,
            message.id,
        )
        try:
            try:
                self._poison.send_message(text)
            except ResourceNotFoundError:
                self._create(self._poison)
                self._poison.send_message(text)
            self._queue.delete_message(message.id, pop_receipt)
        except AzureError as exc:
            logger.warning("Moving message %s to poison failed: %s", message.id, exc)

    def _delete(self, message: Any, pop_receipt: str) -> None:
        try:
            self._queue.delete_message(message.id, pop_receipt)
        except AzureError as exc:
            logger.warning("Deleting message %s failed: %s", message.id, exc)

    @staticmethod
    def _create(client: QueueClient) -> None:
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()

    def _release(self, item: _InFlight, reason: str) -> None:
        with item.lock:
            if item.finished:
                return
            item.finished = True
            logger.info("Abandoning message %s of '%s' (%s)", item.message.id, self.queue_name, reason)
            try:
                self._queue.update_message(item.message.id, item.pop_receipt, visibility_timeout=0)
            except AzureError as exc:
                logger.warning("Releasing message %s failed: %s", item.message.id, exc)

    def _renew_loop(self) -> None:
        while not self._closed.wait(0.2):
            now = time.monotonic()
            with self._changed:
                due = [item for item in self._in_flight.values() if item.renew_at <= now]
            for item in due:
                self._renew(item)

    def _renew(self, item: _InFlight) -> None:
        with item.lock:
            if item.finished:
                return
            try:
                receipt = self._queue.update_message(
                    item.message.id, item.pop_receipt, visibility_timeout=self._lease_s
                )
            except AzureError as exc:
                logger.warning("Renewing the lease of message %s failed: %s", item.message.id, exc)
                return
            item.pop_receipt = receipt.pop_receipt or item.pop_receipt
            item.renew_at = time.monotonic() + self._lease_s / 2
