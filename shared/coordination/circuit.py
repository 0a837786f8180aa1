"""A circuit breaker whose state lives in Redis, so every instance sees the same circuit.

closed → open after ``failure_threshold`` consecutive failures → after ``cooldown_s`` one caller (the probe)
may try → closed on its success, open again on its failure. While open, callers get ``CircuitOpen`` (a
``RetryLater`` with the remaining open time), so messages are delayed, not failed. Server time (``TIME``
in ``circuit.lua``) decides, never an instance's clock. A probe that never reports back frees the probe
slot after ``probe_ttl_s``; a probe that did not make its call after all (e.g. no rate-limit slot) hands the
slot back at once with ``release_probe``.
"""

from __future__ import annotations

import enum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.coordination.keys import CIRCUIT_PREFIX
from shared.errors import RetryLater

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["CircuitBreaker", "CircuitOpen", "CircuitState"]

_US = 1_000_000


@cache
def _script() -> str:
    return (Path(__file__).resolve().parent / "circuit.lua").read_text(encoding="utf-8")


class CircuitState(enum.StrEnum):
    """The breaker's states."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(RetryLater):
    """The circuit is open (or another caller is probing): retry after ``retry_after_s``.

    A deferral (``counts_attempt=False``): the call was never made, so the job keeps its attempt number.
    """

    code = "circuit_open"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s, counts_attempt=False)


class CircuitBreaker:
    """Shared breaker ``name`` (e.g. ``exotel``)."""

    def __init__(
        self, redis: Redis, name: str, *, failure_threshold: int, cooldown_s: float, probe_ttl_s: float = 30.0
    ) -> None:
        self._key = f"{CIRCUIT_PREFIX}:{name}"
        self.name = name
        self._threshold = failure_threshold
        self._cooldown_us = int(cooldown_s * _US)
        self._probe_ttl_us = int(probe_ttl_s * _US)
        self._run = redis.register_script(_script())
        self._redis = redis

    def _call(self, op: str) -> tuple[int, int, str]:
        result: Any = self._run(keys=[self._key], args=[op, self._threshold, self._cooldown_us, self._probe_ttl_us])
        state = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
        return int(result[0]), int(result[1]), state

    def before_call(self) -> bool:
        """Allow a call, or raise ``CircuitOpen``. Returns True when this caller is the half-open probe."""
        allowed, retry_us, state = self._call("before")
        if allowed == 0:
            raise CircuitOpen(f"circuit {self.name} is {state}", retry_after_s=retry_us / _US)
        return allowed == 2

    def record_success(self) -> None:
        """The call worked: close the circuit and reset the failure count."""
        self._call("success")

    def release_probe(self) -> None:
        """The probe (``before_call`` returned True) did not make its call: let the next caller probe now.

        Changes nothing unless the circuit is half-open. Call it only as the probe, before ``probe_ttl_s``
        has passed (after that the slot may already belong to another caller).
        """
        self._call("release")

    def record_failure(self) -> CircuitState:
        """The call failed (5xx, network): count it; returns the state after counting."""
        return CircuitState(self._call("failure")[2])

    def state(self) -> CircuitState:
        """The stored state (``closed`` when never used)."""
        raw = self._redis.hget(self._key, "state")
        return CircuitState(raw.decode() if isinstance(raw, bytes) else raw or "closed")
