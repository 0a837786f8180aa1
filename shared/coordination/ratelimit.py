"""A global rate limiter shared by every instance: GCRA slots in a Redis Lua script on server time.

Every send books a slot of one emission interval (``1 / rate``) and starts when its slot starts, so no
window of any length ever sees more than ``rate * window`` sends, rounded up. There is no burst allowance:
the seed's 10 req/s (or Exotel's 200/min) is a ceiling, not an average. A small ``safety_margin`` (1 % by
default) keeps the limit on the far side even when requests arrive a few milliseconds off their slot.

- **Lanes.** ``Lane.HIGH`` may book any free slot; ``Lane.BULK`` leaves a ``reserve`` share of the slots
  for the high lane and takes one of them only at the last moment, when it would otherwise go unused. So
  bulk can never take the capacity the high lane needs, and all of it when the high lane is idle.
- **Pause.** ``pause(seconds)`` (after Exotel answered 429 with Retry-After) moves every sender's next slot
  past the pause.
- **Bounded waits.** A sender whose slot would start more than ``max_wait_s`` from now gets ``RateLimited``
  (a ``RetryLater`` carrying ``retry_after_s``) instead of sleeping, so the message goes back to its queue
  with a visibility delay and no instance is held.

The script is ``gcra.lua`` beside this module.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.coordination.keys import RATE_LIMIT_PREFIX
from shared.errors import RetryLater

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Booking", "Lane", "RateLimited", "SlotRateLimiter"]

_HERE = Path(__file__).resolve().parent
_US = 1_000_000


@cache
def _script(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


class Lane(enum.StrEnum):
    """Priority lanes sharing one rate."""

    HIGH = "high"
    BULK = "bulk"


class RateLimited(RetryLater):
    """No slot within the max wait (or sends are paused after a 429): retry after ``retry_after_s``."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, paused: bool) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.paused = paused


@dataclass(frozen=True)
class Booking:
    """A booked slot: send after ``wait_s`` (measured from when the answer arrived)."""

    wait_s: float
    slot: int


class SlotRateLimiter:
    """Books send slots for one shared budget (``name``, e.g. ``exotel``) in Redis."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        *,
        rate_per_s: float,
        max_wait_s: float,
        reserve: float = 0.0,
        safety_margin: float = 0.01,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if not 0 <= reserve < 1:
            raise ValueError("reserve must be in [0, 1)")
        if not 0 <= safety_margin < 0.5:
            raise ValueError("safety_margin must be in [0, 0.5)")
        self._redis = redis
        self.interval_us = _US / (rate_per_s * (1 - safety_margin))
        self.max_wait_s = max_wait_s
        self.reserve = reserve
        self._slots_key = f"{RATE_LIMIT_PREFIX}:{name}:slots"
        self._pause_key = f"{RATE_LIMIT_PREFIX}:{name}:pause"
        self._book = redis.register_script(_script("gcra.lua"))
        self._pause = redis.register_script(_script("pause.lua"))

    def book(self, lane: Lane) -> Booking:
        """Book the next free slot for ``lane``; raises ``RateLimited`` when none is within the max wait."""
        result: Any = self._book(
            keys=[self._slots_key, self._pause_key],
            args=[lane.value, repr(self.interval_us), int(self.max_wait_s * _US), repr(self.reserve)],
        )
        granted, micros, detail = int(result[0]), int(result[1]), int(result[2])
        if granted:
            return Booking(wait_s=max(0.0, micros / _US), slot=detail)
        paused = detail == 1
        what = "sends paused after Exotel's 429" if paused else f"no send slot within {self.max_wait_s:g}s"
        raise RateLimited(what, retry_after_s=micros / _US, paused=paused)

    def acquire(self, lane: Lane, *, sleep: Callable[[float], None] = time.sleep) -> float:
        """Book a slot and sleep until it starts; returns the seconds waited.

        Raises ``RateLimited`` when no slot is within the max wait, or when a pause began while waiting.
        """
        booking = self.book(lane)
        if booking.wait_s > 0:
            sleep(booking.wait_s)
        paused_s = self.paused_for_s()
        if paused_s > 0:
            raise RateLimited("sends paused after Exotel's 429", retry_after_s=paused_s, paused=True)
        return booking.wait_s

    def pause(self, seconds: float) -> float:
        """Pause every sender for ``seconds`` (never shortening a longer pause); returns the pause left."""
        left_us = self._pause(keys=[self._pause_key], args=[int(max(0.0, seconds) * _US)])
        return max(0.0, int(left_us) / _US)

    def paused_for_s(self) -> float:
        """Seconds left of the current pause (0 when sends may go)."""
        raw = self._redis.get(self._pause_key)
        if raw is None:
            return 0.0
        seconds, micros = self._redis.time()
        return max(0.0, (int(raw) - (int(seconds) * _US + int(micros))) / _US)
