"""Depth and age of the oldest message of each worker queue and its ``-poison`` queue."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceNotFoundError

from shared.queues import poison_queue_name

if TYPE_CHECKING:
    from azure.storage.queue import QueueServiceClient

    from shared.settings import Settings

__all__ = ["QueueStats", "queue_stats", "worker_queues"]


@dataclass(frozen=True)
class QueueStats:
    """One queue: approximate depth (visible and delayed), age of the oldest visible message, existence."""

    name: str
    depth: int
    oldest_age_s: float | None
    exists: bool = True

    @property
    def is_poison(self) -> bool:
        """Whether this is a ``-poison`` (dead-letter) queue."""
        return self.name.endswith("-poison")


def worker_queues(settings: Settings, *, include_poison: bool = True) -> list[str]:
    """The queues the workers consume, each followed by its ``-poison`` queue."""
    names = [
        settings.email_queue_name,
        settings.whatsapp_queue_name,
        settings.whatsapp_priority_queue_name,
        settings.transcription_queue_name,
    ]
    if not include_poison:
        return names
    return [n for name in names for n in (name, poison_queue_name(name))]


def queue_stats(
    service: QueueServiceClient, names: Iterable[str], *, now: datetime | None = None
) -> list[QueueStats]:
    """Depth (``approximate_message_count``) and oldest visible message age of each queue.

    A queue that does not exist yet (a ``-poison`` queue before its first dead letter) has depth 0.
    Peeking reads the metadata only; it never changes a message's visibility or dequeue count.
    """
    moment = now or datetime.now(UTC)
    found = []
    for name in names:
        client = service.get_queue_client(name)
        try:
            depth = int(client.get_queue_properties().approximate_message_count or 0)
            peeked = client.peek_messages(max_messages=1) if depth else []
        except ResourceNotFoundError:
            found.append(QueueStats(name, 0, None, exists=False))
            continue
        oldest = None
        if peeked and peeked[0].inserted_on is not None:
            oldest = max(0.0, (moment - peeked[0].inserted_on).total_seconds())
        found.append(QueueStats(name, depth, oldest))
    return found
