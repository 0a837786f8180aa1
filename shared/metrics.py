"""Metrics aggregated in Redis, so any instance's ``/api/metrics`` answers for all of them.

Three kinds, each one Redis hash per metric name (under ``METRICS_PREFIX``), one field per label set
(the labels as sorted compact JSON):

- counters (``inc``): ``<prefix>:counter:<name>`` — ``HINCRBYFLOAT``;
- histograms (``observe``): ``<prefix>:histogram:<name>`` — per label set one field per bucket (the count of
  observations that fell in that bucket, not cumulative), plus ``count`` and ``sum``; buckets are fixed per
  metric (``BUCKETS``), so every instance agrees;
- gauges (``set_gauge``): ``<prefix>:gauge:<name>`` — ``HSET``, last write wins.

A set ``<prefix>:names`` records ``<kind>:<name>`` of every metric written, for the exposition.

Job counts and durations come from the job boundary through ``MetricsObserver``; handlers add domain
figures (``deps.metrics.observe("banxway_ratelimit_wait_seconds", wait_s)``) and call
``mark_deduplicated()`` when a job turned out to be a duplicate, so it is counted as ``deduplicated``
rather than ``completed``. Metrics never change a job's outcome: the observer logs Redis errors and
carries on.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from shared.coordination.keys import METRICS_PREFIX
from shared.outcomes import JobResult, Outcome

if TYPE_CHECKING:
    from redis import Redis

    from shared.jobs import Envelope

__all__ = [
    "BUCKETS",
    "DEFAULT_BUCKETS_S",
    "EMAIL_LAST_POLL_SUCCESS",
    "EMAIL_POLL_LAG",
    "HELP",
    "JOBS_TOTAL",
    "JOB_DURATION",
    "QUEUE_DEPTH",
    "QUEUE_OLDEST_AGE",
    "RATELIMIT_WAIT",
    "WHATSAPP_RECONCILIATION_PENDING",
    "HistogramSample",
    "MetricKind",
    "MetricMirror",
    "Metrics",
    "MetricsObserver",
    "job_outcome_label",
    "job_was_deduplicated",
    "mark_deduplicated",
    "reset_deduplicated",
]

log = logging.getLogger(__name__)

MetricKind = Literal["counter", "histogram", "gauge"]

JOBS_TOTAL = "banxway_jobs_total"
JOB_DURATION = "banxway_job_duration_seconds"
QUEUE_DEPTH = "banxway_queue_depth"
QUEUE_OLDEST_AGE = "banxway_queue_oldest_age_seconds"
RATELIMIT_WAIT = "banxway_ratelimit_wait_seconds"
EMAIL_POLL_LAG = "banxway_email_poll_lag_seconds"
EMAIL_LAST_POLL_SUCCESS = "banxway_email_last_poll_success_timestamp_seconds"
WHATSAPP_RECONCILIATION_PENDING = "banxway_whatsapp_reconciliation_pending"

#: Seconds; wide enough for a 10-minute transcription, fine enough for a 50 ms send.
DEFAULT_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)

#: Fixed buckets per histogram (``+Inf`` is implied). Names not listed use ``DEFAULT_BUCKETS_S``.
BUCKETS: dict[str, tuple[float, ...]] = {
    JOB_DURATION: DEFAULT_BUCKETS_S,
    RATELIMIT_WAIT: (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
}

#: Help text of the metrics we know; others get a generic one.
HELP: dict[str, str] = {
    JOBS_TOTAL: "Jobs finished by the job boundary, by queue and outcome "
    "(completed, failed, retried, rate_limited, dead_lettered, deduplicated).",
    JOB_DURATION: "Time a job spent in its handler, by queue.",
    QUEUE_DEPTH: "Approximate number of messages on a storage queue (including -poison queues).",
    QUEUE_OLDEST_AGE: "Age of the oldest visible message on a storage queue.",
    RATELIMIT_WAIT: "Time a send waited for the shared rate limiter.",
    EMAIL_POLL_LAG: "Time since an inbox was last polled successfully, by account (computed when read).",
    EMAIL_LAST_POLL_SUCCESS: "Unix time of an inbox's last successful poll, by account.",
    WHATSAPP_RECONCILIATION_PENDING: "WhatsApp sends whose outcome is unknown and awaits reconciliation.",
    "banxway_circuit_state": "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
}

# An operator can tell a rate-limit wait from other retries by the RetryLater code.
_RATE_LIMIT_MARKERS = ("rate_limit", "ratelimit", "rate-limit", "throttl", "too_many_requests")


def _labels_field(labels: Mapping[str, Any]) -> str:
    return json.dumps({k: str(v) for k, v in sorted(labels.items())}, separators=(",", ":"), ensure_ascii=False)


def _parse_labels(text: str) -> dict[str, str]:
    data = json.loads(text)
    return {str(k): str(v) for k, v in data.items()}


def _format_bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


@dataclass(frozen=True)
class HistogramSample:
    """One label set of a histogram: cumulative bucket counts (``(upper_bound, count)``, ``+Inf`` last)."""

    labels: dict[str, str]
    buckets: list[tuple[float, float]]
    count: float
    sum: float


@dataclass
class _Snapshot:
    counters: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    gauges: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    histograms: dict[str, list[HistogramSample]] = field(default_factory=dict)


class MetricMirror(Protocol):
    """Somewhere else every write also goes (``shared.telemetry.OtelMirror``: OpenTelemetry instruments)."""

    def add(self, name: str, amount: float, labels: Mapping[str, str]) -> None: ...

    def record(self, name: str, value: float, labels: Mapping[str, str]) -> None: ...

    def set(self, name: str, value: float, labels: Mapping[str, str]) -> None: ...


class Metrics:
    """A Redis-aggregated metrics registry. Receives its Redis client (``bytes`` responses are fine).

    Each write is one small pipeline; reading (``snapshot``, ``counter_value`` ...) serves the exposition
    and tests. ``prefix`` defaults to ``METRICS_PREFIX``. Each write goes to ``mirror`` first (errors there
    are logged, never raised), so OpenTelemetry still sees it when Redis is down.
    """

    def __init__(self, redis: Redis, *, prefix: str = METRICS_PREFIX, mirror: MetricMirror | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self._mirror = mirror

    def _mirror_write(self, method: str, name: str, value: float, labels: Mapping[str, Any]) -> None:
        if self._mirror is None:
            return
        try:
            getattr(self._mirror, method)(name, value, {k: str(v) for k, v in labels.items()})
        except Exception:  # telemetry must never break a write
            log.exception("metric mirror failed for %s", name)

    @property
    def prefix(self) -> str:
        """The Redis key prefix of this registry."""
        return self._prefix

    def _key(self, kind: MetricKind, name: str) -> str:
        return f"{self._prefix}:{kind}:{name}"

    @property
    def _names_key(self) -> str:
        return f"{self._prefix}:names"

    def inc(self, name: str, amount: float = 1, **labels: Any) -> None:
        """Add ``amount`` (≥ 0) to counter ``name`` for ``labels``."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        self._mirror_write("add", name, amount, labels)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrbyfloat(self._key("counter", name), _labels_field(labels), float(amount))
        pipe.sadd(self._names_key, f"counter:{name}")
        pipe.execute()

    def observe(self, name: str, value: float, **labels: Any) -> None:
        """Record ``value`` (in the metric's unit, seconds for ``*_seconds``) in histogram ``name``."""
        self._mirror_write("record", name, value, labels)
        bounds = BUCKETS.get(name, DEFAULT_BUCKETS_S)
        bucket = next((b for b in bounds if value <= b), math.inf)
        field_prefix = _labels_field(labels)
        key = self._key("histogram", name)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(key, f"{field_prefix}|{_format_bound(bucket)}", 1)
        pipe.hincrby(key, f"{field_prefix}|count", 1)
        pipe.hincrbyfloat(key, f"{field_prefix}|sum", float(value))
        pipe.sadd(self._names_key, f"histogram:{name}")
        pipe.execute()

    def set_gauge(self, name: str, value: float, **labels: Any) -> None:
        """Set gauge ``name`` for ``labels`` to ``value`` (shared by every instance; last write wins)."""
        self._mirror_write("set", name, value, labels)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self._key("gauge", name), _labels_field(labels), repr(float(value)))
        pipe.sadd(self._names_key, f"gauge:{name}")
        pipe.execute()

    def remove_gauge(self, name: str, **labels: Any) -> None:
        """Forget one label set of a gauge (e.g. an inbox that was deleted)."""
        self._redis.hdel(self._key("gauge", name), _labels_field(labels))

    # --- reading ------------------------------------------------------------------------------------

    def counter_value(self, name: str, **labels: Any) -> float:
        """The current value of one counter label set (0 when never incremented)."""
        raw = self._redis.hget(self._key("counter", name), _labels_field(labels))
        return float(raw) if raw is not None else 0.0

    def gauge_value(self, name: str, **labels: Any) -> float | None:
        """The current value of one gauge label set, or None."""
        raw = self._redis.hget(self._key("gauge", name), _labels_field(labels))
        return float(raw) if raw is not None else None

    def gauge_samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every label set of gauge ``name`` with its value (one Redis round trip)."""
        return [(_parse_labels(_text(k)), float(v)) for k, v in self._redis.hgetall(self._key("gauge", name)).items()]

    def histogram(self, name: str, **labels: Any) -> HistogramSample | None:
        """One label set of a histogram, or None when nothing was observed."""
        for sample in self._histogram_samples(name):
            if sample.labels == {k: str(v) for k, v in labels.items()}:
                return sample
        return None

    def names(self) -> list[tuple[MetricKind, str]]:
        """Every metric written so far, as ``(kind, name)``."""
        found: list[tuple[MetricKind, str]] = []
        for raw in self._redis.smembers(self._names_key):
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            kind, _, name = text.partition(":")
            if kind in ("counter", "histogram", "gauge"):
                found.append((kind, name))  # type: ignore[arg-type]
        return sorted(found)

    def snapshot(self) -> _Snapshot:
        """Every counter, gauge and histogram with its label sets (for the exposition)."""
        snap = _Snapshot()
        for kind, name in self.names():
            if kind == "histogram":
                snap.histograms[name] = self._histogram_samples(name)
            else:
                target = snap.counters if kind == "counter" else snap.gauges
                target[name] = [
                    (_parse_labels(_text(k)), float(v))
                    for k, v in self._redis.hgetall(self._key(kind, name)).items()
                ]
        return snap

    def _histogram_samples(self, name: str) -> list[HistogramSample]:
        raw: Mapping[Any, Any] = self._redis.hgetall(self._key("histogram", name))
        per_labels: dict[str, dict[str, float]] = {}
        for k, v in raw.items():
            labels_text, _, part = _text(k).rpartition("|")
            per_labels.setdefault(labels_text, {})[part] = float(v)
        bounds = [*BUCKETS.get(name, DEFAULT_BUCKETS_S), math.inf]
        samples = []
        for labels_text, parts in sorted(per_labels.items()):
            running = 0.0
            cumulative = []
            for bound in bounds:
                running += parts.get(_format_bound(bound), 0.0)
                cumulative.append((bound, running))
            samples.append(
                HistogramSample(
                    labels=_parse_labels(labels_text),
                    buckets=cumulative,
                    count=parts.get("count", running),
                    sum=parts.get("sum", 0.0),
                )
            )
        return samples

    def clear(self) -> None:
        """Delete every metric under this prefix (tests, ``ops`` after an environment reset)."""
        keys = [self._key(kind, name) for kind, name in self.names()]
        self._redis.delete(*keys, self._names_key)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --- the job boundary's observer --------------------------------------------------------------------

_deduplicated: contextvars.ContextVar[bool] = contextvars.ContextVar("banxway_job_deduplicated", default=False)


def mark_deduplicated() -> None:
    """Called by a handler whose job turned out to be a duplicate: it is counted as ``deduplicated``."""
    _deduplicated.set(True)


def job_was_deduplicated() -> bool:
    """Whether the handler of the current job called ``mark_deduplicated()``."""
    return _deduplicated.get()


def reset_deduplicated() -> None:
    """Forget the mark before a job starts (observers' ``before_job``)."""
    _deduplicated.set(False)


def job_outcome_label(result: JobResult, *, deduplicated: bool = False) -> str:
    """The ``outcome`` label of ``banxway_jobs_total`` for one finished job."""
    if result.outcome is Outcome.COMPLETED:
        return "deduplicated" if deduplicated else "completed"
    if result.outcome is Outcome.RETRIED:
        code = (result.error_code or "").lower()
        return "rate_limited" if any(marker in code for marker in _RATE_LIMIT_MARKERS) else "retried"
    return str(result.outcome.value)


class MetricsObserver:
    """A ``JobObserver``: counts every job by queue and outcome and records its duration.

    ``metrics`` is resolved on first use (``lambda: deps.metrics``), so building ``Deps`` needs no Redis;
    any error (Redis down, REDIS_URL unset) is logged — once per ``error_log_interval_s`` — and swallowed.
    """

    def __init__(
        self,
        metrics: Callable[[], Metrics],
        *,
        error_log_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._error_log_interval_s = error_log_interval_s
        self._clock = clock
        self._last_error_logged: float | None = None

    def before_job(self, queue: str, job: Envelope[Any]) -> None:  # noqa: ARG002 - the hook's signature
        """Forget a duplicate mark left from an earlier job on this thread."""
        reset_deduplicated()

    def after_job(self, result: JobResult) -> None:
        """Count the job and observe its duration. Never raises."""
        outcome = job_outcome_label(result, deduplicated=job_was_deduplicated())
        try:
            metrics = self._metrics()
            metrics.inc(JOBS_TOTAL, queue=result.queue, outcome=outcome)
            metrics.observe(JOB_DURATION, result.duration_s, queue=result.queue)
        except Exception as exc:  # noqa: BLE001 - metrics must never change a job's outcome
            now = self._clock()
            if self._last_error_logged is None or now - self._last_error_logged >= self._error_log_interval_s:
                self._last_error_logged = now
                log.warning("job metrics not recorded: %s: %s", type(exc).__name__, exc)

    def __repr__(self) -> str:
        return "MetricsObserver()"

