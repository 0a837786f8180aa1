"""A global rate limiter shared by every instance: GCRA slots in a Redis Lua script on server time.

Every send books a slot of one emission interval (``1 / rate``) and starts when its slot starts, so no
window of any length ever sees more than ``rate * window`` sends, rounded up. There is no burst allowance:
the seed's 10 req/s (or Exotel's 200/min) is a ceiling, not an average.

Jitter. The far side counts arrivals, not slots: a send that leaves late (sleep overshoot, a busy CPU, the
GIL) followed by on-time ones puts ``rate + 1`` arrivals into one 1 s window. Two defences:

- ``safety_margin`` (1.5 % by default) stretches the interval, so ``rate`` slots span ``1 s + slack``
  (slack ≈ 15 ms at 1.5 %, whatever the rate): arrivals may drift up to that much relative to each other;
- a sender that wakes later than half the slack after its slot's start does not send on that slot (sending
  then is what crowds the next senders' window): it books a new one, up to ``_MAX_REBOOKS`` times, then
  defers. That bounds the part of the jitter we control (waking up) and leaves the other half of the slack
  for the part we do not (the request's way to the far side).

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
import logging
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
#: Fresh bookings after waking too late, before deferring the job instead.
_MAX_REBOOKS = 2
log = logging.getLogger(__name__)


@cache
def _script(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


class Lane(enum.StrEnum):
    """Priority lanes sharing one rate."""

    HIGH = "high"
    BULK = "bulk"


class RateLimited(RetryLater):
    """No slot within the max wait (or sends are paused after a 429): retry after ``retry_after_s``.

    A deferral (``counts_attempt=False``): nothing was tried, so the job keeps its attempt number and a long
    backlog never exhausts its retries; the job's age bounds it instead.
    """

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, paused: bool) -> None:
        super().__init__(message, retry_after_s=retry_after_s, counts_attempt=False)
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
        safety_margin: float = 0.015,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if not 0 <= reserve < 1:
            raise ValueError("reserve must be in [0, 1)")
        if not 0 <= safety_margin < 0.5:
            raise ValueError("safety_margin must be in [0, 0.5)")
        self._redis = redis
        self.interval_us = _US / (rate_per_s * (1 - safety_margin))
        #: How late after its slot's start a sender may still send: half the slack of a 1 s window (no
        #: margin, no slack to protect: the guard is off).
        slack_s = rate_per_s * self.interval_us / _US - 1
        self.late_tolerance_s = slack_s / 2 if safety_margin > 0 else float("inf")
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

    def acquire(
        self,
        lane: Lane,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> float:
        """Book a slot and sleep until it starts; returns the seconds waited.

        A sender that wakes more than ``late_tolerance_s`` after its slot started books another slot (see
        the module docstring). Raises ``RateLimited`` when no slot is within the max wait, when a pause began
        while waiting, or when it woke too late ``_MAX_REBOOKS + 1`` times in a row.
        """
        started = clock()
        for _ in range(_MAX_REBOOKS + 1):
            booking = self.book(lane)
            booked_at = clock()  # the slot starts ``wait_s`` after the answer (at the earliest)
            if booking.wait_s > 0:
                sleep(booking.wait_s)
            paused_s = self.paused_for_s()
            if paused_s > 0:
                raise RateLimited("sends paused after Exotel's 429", retry_after_s=paused_s, paused=True)
            # Measured after the last step before the caller sends, so it covers everything we control.
            late_s = clock() - booked_at - booking.wait_s
            if late_s <= self.late_tolerance_s:
                return clock() - started
            log.info("rate limiter: ready %.1f ms after slot %s started; booking another", late_s * 1000,
                     booking.slot)
        raise RateLimited("woke too late for every booked slot", retry_after_s=self.interval_us / _US,
                          paused=False)

    def pause(self, seconds: float) -> float:
        """Pause every sender for ``seconds`` (never shortening a longer pause); returns the pause left."""
        left_us = self._pause(keys=[self._pause_key], args=[int(max(0.0, seconds) * _US)])
        return max(0.0, int(left_us) / _US)

    def paused_for_s(self) -> float:
        """Seconds left of the current pause (0 when sends may go)."""
        pipe = self._redis.pipeline(transaction=False)  # one round trip: it sits between waking and sending
        pipe.get(self._pause_key)
        pipe.time()
        raw, (seconds, micros) = pipe.execute()
        if raw is None:
            return 0.0
        return max(0.0, (int(raw) - (int(seconds) * _US + int(micros))) / _US)
