"""Gauges read at collection time from the source of truth: storage queues, the store and Redis.

- queue depth and oldest-message age of every worker queue and ``-poison`` queue;
- WhatsApp sends pending reconciliation (the store);
- per-inbox poll lag (``banxway_email_poll_lag_seconds{account_id}``): seconds since each active, IMAP-enabled
  account's last successful poll — the later of the time the poller recorded in Redis
  (``banxway_email_last_poll_success_timestamp_seconds``) and the account row's ``last_polled_at`` when its
  ``last_poll_status`` is SUCCESS. Computed when read, so it grows while polls stop. An account that has
  never been polled successfully has no lag sample (its failures show in ``banxway_email_polls_total``).

Both exporters use them: the Prometheus exposition (``/api/metrics``) on each scrape, and the OpenTelemetry
observable gauges (``customMetrics``) on each export, throttled by ``SampledGauges``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.metrics import (
    EMAIL_LAST_POLL_SUCCESS,
    EMAIL_POLL_LAG,
    QUEUE_DEPTH,
    QUEUE_OLDEST_AGE,
    WHATSAPP_RECONCILIATION_PENDING,
)
from shared.ops.queue_stats import queue_stats, worker_queues

if TYPE_CHECKING:
    from shared.deps import Deps

__all__ = ["GaugeSample", "SampledGauges", "poll_lag_gauges", "read_gauges", "register_otel_gauges"]

log = logging.getLogger(__name__)

#: Count sends awaiting reconciliation up to this many (a gauge, not an inventory).
RECONCILIATION_COUNT_LIMIT = 1000


@dataclass(frozen=True)
class GaugeSample:
    """One gauge value with its labels."""

    name: str
    labels: dict[str, str]
    value: float


def read_gauges(deps: Deps, *, include_store: bool = True) -> list[GaugeSample]:
    """Queue depth and oldest age of every worker queue and ``-poison`` queue; sends pending reconciliation.

    A source that fails is logged and left out; the others are still returned.
    """
    samples: list[GaugeSample] = []
    try:
        for stats in queue_stats(deps.queue_service, worker_queues(deps.settings)):
            samples.append(GaugeSample(QUEUE_DEPTH, {"queue": stats.name}, float(stats.depth)))
            samples.append(GaugeSample(QUEUE_OLDEST_AGE, {"queue": stats.name}, stats.oldest_age_s or 0.0))
    except Exception as exc:  # noqa: BLE001 - one source down must not hide the rest
        log.warning("queue gauges unavailable: %s", type(exc).__name__)
    if include_store:
        try:
            pending = deps.store.list_sends_needing_reconciliation(limit=RECONCILIATION_COUNT_LIMIT)
            samples.append(GaugeSample(WHATSAPP_RECONCILIATION_PENDING, {}, float(len(pending))))
        except Exception as exc:  # noqa: BLE001 - one source down must not hide the rest
            log.warning("reconciliation gauge unavailable: %s", type(exc).__name__)
        try:
            samples += poll_lag_gauges(deps)
        except Exception as exc:  # noqa: BLE001 - one source down must not hide the rest
            log.warning("email poll lag gauge unavailable: %s", type(exc).__name__)
    return samples


def poll_lag_gauges(deps: Deps, *, now: datetime | None = None) -> list[GaugeSample]:
    """``banxway_email_poll_lag_seconds{account_id}`` of every active, IMAP-enabled account polled successfully.

    Raises what the store raises; Redis errors only drop the Redis side (the store's SUCCESS still counts).
    """
    moment = now or datetime.now(UTC)
    accounts = deps.store.list_pollable_accounts()
    try:
        recorded = {labels.get("account_id"): ts for labels, ts in deps.metrics.gauge_samples(EMAIL_LAST_POLL_SUCCESS)}
    except Exception as exc:  # noqa: BLE001 - Redis down: the store's last successful poll still answers
        log.warning("last poll times from Redis unavailable: %s", type(exc).__name__)
        recorded = {}
    samples = []
    for account in accounts:
        candidates = [recorded[account.id]] if account.id in recorded else []
        if account.last_poll_status == "SUCCESS" and account.last_polled_at is not None:
            candidates.append(account.last_polled_at.timestamp())
        if candidates:
            lag_s = max(0.0, moment.timestamp() - max(candidates))
            samples.append(GaugeSample(EMAIL_POLL_LAG, {"account_id": account.id}, lag_s))
    return samples


class SampledGauges:
    """``read`` at most once per ``interval_s``; every caller in between gets the cached samples."""

    def __init__(self, read: Callable[[], list[GaugeSample]], *, interval_s: float = 60.0) -> None:
        self._read = read
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._at: float | None = None
        self._samples: list[GaugeSample] = []

    def samples(self, name: str) -> list[GaugeSample]:
        """The cached samples of gauge ``name``, refreshed when older than the interval."""
        with self._lock:
            now = time.monotonic()
            if self._at is None or now - self._at >= self._interval_s:
                self._samples = self._read()
                self._at = now
            return [s for s in self._samples if s.name == name]


def register_otel_gauges(
    deps: Deps, *, meter_provider: Any = None, interval_s: float = 60.0
) -> SampledGauges:
    """Observable OpenTelemetry gauges (``customMetrics``) for the gauges read here and the circuit states.

    Every instance reports every queue (the KQL takes the max); reads happen at most once per ``interval_s``.
    """
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, Observation

    from shared.metrics import HELP
    from shared.ops.coordination_state import CIRCUIT_STATE, read_coordination_gauges

    sampled = SampledGauges(lambda: read_gauges(deps) + read_coordination_gauges(deps), interval_s=interval_s)
    meter = otel_metrics.get_meter("banxway.workers", meter_provider=meter_provider)

    def callback_for(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(s.value, s.labels) for s in sampled.samples(name)]

        return observe

    for name in (QUEUE_DEPTH, QUEUE_OLDEST_AGE, WHATSAPP_RECONCILIATION_PENDING, EMAIL_POLL_LAG, CIRCUIT_STATE):
        meter.create_observable_gauge(
            name, callbacks=[callback_for(name)], unit="s" if name.endswith("_seconds") else "1",
            description=HELP.get(name, ""),
        )
    return sampled
