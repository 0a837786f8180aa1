"""Dead-letter tooling: list with reasons, retry (replay) and purge messages on ``<queue>-poison``.

Works for our wrapped dead letters (``QueueOps.dead_letter``: reason, attempts, overflow blob) and for the
bare messages the host moves there after ``maxDequeueCount``. ``retry`` puts the original body back on
its queue with ``attempt`` reset to 1 (like BullMQ's ``retryJobs``) and deletes the dead letter only after
the resend succeeded, so a crash in between duplicates a message rather than losing it. A dead letter whose
body was too large for a queue message keeps it in an overflow blob (``dead-letters`` container); ``retry``
and ``purge`` delete that blob last, after the dead letter itself, so a crash leaves at worst an orphan blob.

Listing: Azure's peek returns at most 32 messages. A larger ``limit`` receives the dead letters with a short
hold (``_HOLD_S``) and makes each visible again right away (``update_message`` with visibility 0), so nothing
stays hidden; it does raise their dequeue count, which nothing reads on a ``-poison`` queue.

Selection (``Selector``): all, the first ``count``, those older than ``older_than_s``, or by id (the job
id, or the poison queue's message id).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

from shared.queues import DeadLetter, QueueOps, poison_queue_name

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueMessage

__all__ = ["DeadLetterEntry", "Selector", "list_dead_letters", "purge_dead_letters", "retry_dead_letters"]

log = logging.getLogger(__name__)

_PEEK_MAX = 32
#: How long received dead letters stay hidden while we work on them.
_HOLD_S = 60
#: Pages of only already-handled messages in a row that end a walk of a poison queue.
_MAX_STALE_PAGES = 3

Progress = Callable[[int], None]


@dataclass(frozen=True)
class DeadLetterEntry:
    """A dead letter as the command line shows it."""

    message_id: str
    letter: DeadLetter
    inserted_on: datetime | None
    dequeue_count: int | None

    @property
    def job_id(self) -> str | None:
        """The job id: from our wrapper, or from the envelope of a bare host-made dead letter."""
        if self.letter.job_id:
            return self.letter.job_id
        envelope = _json_object(self.letter.body)
        value = envelope.get("id") if envelope else None
        return value if isinstance(value, str) else None

    @property
    def reason(self) -> str:
        """Our recorded reason, or what the host's move implies."""
        return self.letter.reason or "moved by the Functions host after maxDequeueCount (no reason recorded)"

    def age_s(self, now: datetime) -> float | None:
        """Seconds since it was dead-lettered (our timestamp, else the poison message's insertion)."""
        at = _parse_time(self.letter.dead_lettered_at) or self.inserted_on
        return None if at is None else max(0.0, (now - at).total_seconds())


@dataclass(frozen=True)
class Selector:
    """Which dead letters an operation applies to; no criteria means all of them."""

    count: int | None = None
    older_than_s: float | None = None
    ids: frozenset[str] = frozenset()

    def matches(self, entry: DeadLetterEntry, now: datetime) -> bool:
        """Whether ``entry`` is selected (``count`` is applied by the caller)."""
        if self.ids and entry.message_id not in self.ids and entry.job_id not in self.ids:
            return False
        if self.older_than_s is not None:
            age = entry.age_s(now)
            if age is None or age < self.older_than_s:
                return False
        return True


def _json_object(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _entry(message: QueueMessage) -> DeadLetterEntry:
    content = message.content if isinstance(message.content, bytes) else str(message.content)
    return DeadLetterEntry(str(message.id), DeadLetter.parse(content), message.inserted_on, message.dequeue_count)


def list_dead_letters(ops: QueueOps, queue: str, *, limit: int = _PEEK_MAX) -> list[DeadLetterEntry]:
    """Up to ``limit`` dead letters of ``queue`` (oldest first) without touching them.

    Up to 32 are peeked; a larger ``limit`` receives them with a short hold and makes them visible again.
    """
    client = ops.client(poison_queue_name(queue))
    try:
        if limit <= _PEEK_MAX:
            return [_entry(m) for m in client.peek_messages(max_messages=limit)]
        entries = []
        held = []
        for message in _receive_all(ops, queue, limit=limit):
            entries.append(_entry(message))
            held.append(message)
        for message in held:
            with contextlib.suppress(ResourceNotFoundError):
                client.update_message(message, visibility_timeout=0)
        return entries
    except ResourceNotFoundError:
        return []


def _receive_all(ops: QueueOps, queue: str, *, limit: int | None = None) -> Iterator[QueueMessage]:
    client = ops.client(poison_queue_name(queue))
    seen: set[str] = set()
    stale_pages = 0
    while limit is None or len(seen) < limit:
        page = list(client.receive_messages(max_messages=_PEEK_MAX, visibility_timeout=_HOLD_S))
        if not page:
            return
        fresh = [m for m in page if m.id not in seen]
        if not fresh:
            # Only messages already handled came back (their hold ran out on a long walk): keep going a
            # little, so messages not yet seen behind them are still reached.
            stale_pages += 1
            if stale_pages >= _MAX_STALE_PAGES:
                return
            continue
        stale_pages = 0
        for message in fresh:
            seen.add(message.id)
            yield message
            if limit is not None and len(seen) >= limit:
                return


def _process(
    ops: QueueOps,
    queue: str,
    selector: Selector,
    act: Callable[[QueueMessage, DeadLetterEntry], None],
    *,
    progress: Progress | None,
    now: datetime | None,
) -> int:
    """Receive every dead letter, ``act`` on the selected ones, release the others. Returns how many."""
    moment = now or datetime.now(UTC)
    client = ops.client(poison_queue_name(queue))
    done = 0
    skipped = []
    try:
        for message in _receive_all(ops, queue):
            entry = _entry(message)
            if (selector.count is not None and done >= selector.count) or not selector.matches(entry, moment):
                skipped.append(message)
                continue
            act(message, entry)
            done += 1
            if progress is not None:
                progress(done)
    except ResourceNotFoundError:
        return done
    finally:
        for message in skipped:
            with contextlib.suppress(ResourceNotFoundError):
                client.update_message(message, visibility_timeout=0)
    return done


def _delete_overflow_blob(blob_service: BlobServiceClient | None, letter: DeadLetter) -> None:
    if blob_service is None or not letter.body_blob:
        return
    container, _, name = letter.body_blob.partition("/")
    with contextlib.suppress(ResourceNotFoundError):  # already gone: a retry after a crash, or a purge
        blob_service.get_blob_client(container, name).delete_blob()


def _reset_attempt(body: bytes, now: datetime) -> bytes:
    """A replay starts afresh: attempt 1 and a new ``created_at`` (so the deferral age limit restarts)."""
    try:
        envelope = _json_object(body.decode("utf-8"))
    except UnicodeDecodeError:
        return body  # not text: replayed byte for byte
    if envelope is not None and "v" in envelope and "payload" in envelope:
        envelope["attempt"] = 1
        envelope["created_at"] = now.isoformat()
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return body  # a bare payload (or not JSON at all) carries no attempt count


def retry_dead_letters(
    ops: QueueOps,
    queue: str,
    selector: Selector = Selector(),
    *,
    progress: Progress | None = None,
    now: datetime | None = None,
    blob_service: BlobServiceClient | None = None,
) -> int:
    """Move the selected dead letters of ``queue`` back onto their queue with ``attempt`` 1. Returns how many.

    ``blob_service`` deletes the overflow blob of a blob-backed dead letter after its replay (without it the
    blob stays behind).
    """
    client = ops.client(poison_queue_name(queue))

    def replay(message: QueueMessage, entry: DeadLetterEntry) -> None:
        body = ops.read_dead_letter_bytes(entry.letter)
        ops.send(entry.letter.queue or queue, _reset_attempt(body, datetime.now(UTC)))
        client.delete_message(message)
        _delete_overflow_blob(blob_service, entry.letter)
        log.info("dead letter retried: queue=%s job_id=%s", queue, entry.job_id)

    return _process(ops, queue, selector, replay, progress=progress, now=now)


def purge_dead_letters(
    ops: QueueOps,
    queue: str,
    selector: Selector = Selector(),
    *,
    progress: Progress | None = None,
    now: datetime | None = None,
    blob_service: BlobServiceClient | None = None,
) -> int:
    """Delete the selected dead letters of ``queue`` (and, given ``blob_service``, their overflow blobs) for good.

    Returns how many.
    """
    client = ops.client(poison_queue_name(queue))

    def delete(message: QueueMessage, entry: DeadLetterEntry) -> None:
        client.delete_message(message)
        _delete_overflow_blob(blob_service, entry.letter)
        log.info("dead letter purged: queue=%s job_id=%s", queue, entry.job_id)

    return _process(ops, queue, selector, delete, progress=progress, now=now)
