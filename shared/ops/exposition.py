"""The Prometheus text exposition of ``/api/metrics``, written by prometheus-client.

Collectors read at scrape time: the Redis aggregates (``shared.metrics``: job counters and duration
histograms, domain counters and gauges every instance wrote), the storage queues (depth and oldest age
per queue and ``-poison`` queue), the store (sends pending reconciliation) and the coordination state
(circuit breakers) — so any instance answers for all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shared.metrics import HELP, Metrics
from shared.ops.coordination_state import read_coordination_gauges
from shared.ops.gauges import GaugeSample, read_gauges

if TYPE_CHECKING:
    from shared.deps import Deps

__all__ = ["CONTENT_TYPE", "GaugeCollector", "RedisMetricsCollector", "render_metrics"]

log = logging.getLogger(__name__)

#: The Prometheus text format prometheus-client writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SCRAPE_ERRORS = "banxway_metrics_scrape_errors"


def _help(name: str) -> str:
    return HELP.get(name, name.replace("_", " "))


def _float_bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


class RedisMetricsCollector(Collector):
    """Counters, histograms and gauges aggregated in Redis by every instance."""

    def __init__(self, metrics: Metrics, *, exclude: Iterable[str] = ()) -> None:
        self._metrics = metrics
        self._exclude = frozenset(exclude)  # names another collector reads from their source

    def collect(self) -> Iterable[Metric]:
        """One family per metric name; a Redis failure yields a scrape-error sample instead."""
        try:
            snap = self._metrics.snapshot()
        except Exception as exc:  # noqa: BLE001 - the other collectors still answer
            log.warning("metrics from Redis unavailable: %s", type(exc).__name__)
            errors = Metric(_SCRAPE_ERRORS, "Sources the last scrape could not read.", "gauge")
            errors.add_sample(_SCRAPE_ERRORS, {"source": "redis"}, 1.0)
            yield errors
            return
        for name, samples in sorted(snap.counters.items()):
            base = name.removesuffix("_total")
            family = Metric(base, _help(name), "counter")
            for labels, value in samples:
                family.add_sample(f"{base}_total", labels, value)
            yield family
        for name, hist_samples in sorted(snap.histograms.items()):
            family = Metric(name, _help(name), "histogram")
            for sample in hist_samples:
                for bound, count in sample.buckets:
                    family.add_sample(f"{name}_bucket", {**sample.labels, "le": _float_bound(bound)}, count)
                family.add_sample(f"{name}_count", sample.labels, sample.count)
                family.add_sample(f"{name}_sum", sample.labels, sample.sum)
            yield family
        for name, samples in sorted(snap.gauges.items()):
            if name in self._exclude:
                continue
            family = Metric(name, _help(name), "gauge")
            for labels, value in samples:
                family.add_sample(name, labels, value)
            yield family


class GaugeCollector(Collector):
    """Gauges read from their source at scrape time (queues, store, coordination state)."""

    def __init__(self, read: Callable[[], list[GaugeSample]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        """One family per gauge name."""
        families: dict[str, Metric] = {}
        for sample in self._read():
            family = families.setdefault(sample.name, Metric(sample.name, _help(sample.name), "gauge"))
            family.add_sample(sample.name, sample.labels, sample.value)
        yield from families.values()


def render_metrics(deps: Deps) -> bytes:
    """The whole exposition for ``/api/metrics``."""
    gauges = read_gauges(deps) + read_coordination_gauges(deps)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisMetricsCollector(deps.metrics, exclude={g.name for g in gauges}))
    registry.register(GaugeCollector(lambda: gauges))
    return generate_latest(registry)
