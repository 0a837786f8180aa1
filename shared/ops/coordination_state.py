"""Gauges from the Redis coordination state the workers keep: circuit breakers.

Read through ``shared.coordination.circuit.CircuitBreaker.state()``, so the key layout lives in one place;
the breakers are found by scanning ``CIRCUIT_PREFIX``. Rate-limiter waits are a histogram the WhatsApp
handler records (``banxway_ratelimit_wait_seconds{limiter,lane}``), exposed with the other Redis metrics.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.coordination.circuit import CircuitBreaker, CircuitState
from shared.coordination.keys import CIRCUIT_PREFIX
from shared.ops.gauges import GaugeSample

if TYPE_CHECKING:
    from shared.deps import Deps

__all__ = ["CIRCUIT_STATE", "CIRCUIT_STATE_VALUES", "read_coordination_gauges"]

log = logging.getLogger(__name__)

CIRCUIT_STATE = "banxway_circuit_state"
#: 0 closed (calls flow), 1 half-open (one probe), 2 open (calls are delayed).
CIRCUIT_STATE_VALUES = {CircuitState.CLOSED: 0.0, CircuitState.HALF_OPEN: 1.0, CircuitState.OPEN: 2.0}
_SCAN_LIMIT = 100


def read_coordination_gauges(deps: Deps) -> list[GaugeSample]:
    """Circuit state per breaker (``banxway_circuit_state{circuit}``); empty when Redis is unavailable."""
    samples = []
    try:
        redis = deps.redis
        settings = deps.settings
        prefix = f"{CIRCUIT_PREFIX}:"
        for raw in redis.scan_iter(match=f"{prefix}*", count=_SCAN_LIMIT):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            name = key.removeprefix(prefix)
            breaker = CircuitBreaker(
                redis, name, failure_threshold=settings.circuit_failure_threshold,
                cooldown_s=settings.circuit_cooldown_s,
            )
            samples.append(GaugeSample(CIRCUIT_STATE, {"circuit": name}, CIRCUIT_STATE_VALUES[breaker.state()]))
    except Exception as exc:  # noqa: BLE001 - the other gauges still answer
        log.warning("circuit state unavailable: %s", type(exc).__name__)
    return samples
