"""Application Insights through OpenTelemetry: configuration, one span per job, job-end log records.

- ``configure_telemetry(settings)`` (called once per process by ``get_deps()``): installs log redaction,
  then configures azure-monitor **only** when the platform worker has not
  (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY`` unset) and ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is
  set. Off Azure it chooses resource detectors without ``azure_vm`` and turns statsbeat off, so nothing
  contacts 169.254.169.254.
- ``TelemetryObserver`` (registered on every ``Deps``): each job is a CONSUMER span, child of the current
  context (the host's invocation) and linked to the enqueuer's trace context from ``Envelope.trace``; its
  end writes one log record whose ``extra`` fields become ``customDimensions`` (job_id, queue, outcome,
  reason, attempt, account_id, message_id) for the KQL under ``infra/queries/``.
- ``OtelMirror``: ``shared.metrics.Metrics`` mirrors every counter, histogram and gauge into
  OpenTelemetry instruments of the same name (``customMetrics``); without a configured provider they are
  no-ops.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.metrics import HELP, job_outcome_label, job_was_deduplicated, reset_deduplicated
from shared.outcomes import JobResult, Outcome
from shared.redaction import install_log_redaction, redact

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from shared.deps import Deps
    from shared.jobs import Envelope
    from shared.settings import Settings

__all__ = [
    "OtelMirror",
    "TelemetryMode",
    "TelemetryObserver",
    "configure_telemetry",
    "job_dimensions",
    "setup_process_telemetry",
]

log = logging.getLogger(__name__)

TelemetryMode = Literal["platform", "configured", "off"]

_TRACER_NAME = "banxway.workers"
_PLATFORM_FLAG = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
_OFF_AZURE_DETECTORS = "otel"  # the SDK's env-var detector; never azure_vm (169.254.169.254)
_configure_lock = threading.Lock()
_configured_mode: list[TelemetryMode] = []


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def configure_telemetry(
    settings: Settings,
    *,
    environ: MutableMapping[str, str] | None = None,
    configure: Callable[..., None] | None = None,
) -> TelemetryMode:
    """Set up redaction and, when nobody else does, Azure Monitor. Idempotent per process.

    Returns ``platform`` (the Functions worker configured azure-monitor), ``configured`` (we did) or ``off``.
    ``environ`` and ``configure`` exist for tests; by default ``os.environ`` and ``configure_azure_monitor``.
    """
    env = os.environ if environ is None else environ
    install_log_redaction(settings.secret_values())
    with _configure_lock:
        if _configured_mode and environ is None:
            return _configured_mode[0]
        mode = _configure_once(settings, env, configure)
        if environ is None:
            _configured_mode.append(mode)
    if logging.getLogger(__name__).level == logging.NOTSET:
        # Job-end records are INFO; the root logger's default (WARNING) would drop them.
        logging.getLogger(__name__).setLevel(logging.INFO)
    return mode


def _configure_once(
    settings: Settings, env: MutableMapping[str, str], configure: Callable[..., None] | None
) -> TelemetryMode:
    if _truthy(env.get(_PLATFORM_FLAG)):
        log.info("telemetry: configured by the Functions worker (%s)", _PLATFORM_FLAG)
        return "platform"
    if settings.applicationinsights_connection_string is None:
        return "off"
    if env.get("WEBSITE_INSTANCE_ID"):
        env.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_functions")
    else:
        env.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", _OFF_AZURE_DETECTORS)
        env.setdefault("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    if configure is None:
        from azure.monitor.opentelemetry import configure_azure_monitor  # costly import, only when used

        configure = configure_azure_monitor
    configure(
        connection_string=settings.applicationinsights_connection_string.get_secret_value(),
        logger_name=env.get("PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME", ""),
    )
    log.info("telemetry: azure-monitor configured")
    return "configured"


def setup_process_telemetry(deps: Deps) -> TelemetryMode:
    """``configure_telemetry`` and, when telemetry is on, the observable queue/circuit gauges (once)."""
    first = not _configured_mode
    mode = configure_telemetry(deps.settings)
    if mode != "off" and first:
        from shared.ops.gauges import register_otel_gauges

        register_otel_gauges(deps)
    return mode


def reset_telemetry_state() -> None:
    """Forget that telemetry was configured (tests)."""
    with _configure_lock:
        _configured_mode.clear()


# --- spans and job-end records ---------------------------------------------------------------------

_current_span: contextvars.ContextVar[tuple[Span, object] | None] = contextvars.ContextVar(
    "banxway_job_span", default=None
)
_propagator = TraceContextTextMapPropagator()


def _enqueuer_link(job: Envelope[Any] | None) -> list[Link]:
    if job is None or job.trace is None:
        return []
    carrier = {"traceparent": job.trace.traceparent, "tracestate": job.trace.tracestate}
    span_context = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
    return [Link(span_context, {"banxway.link": "enqueuer"})] if span_context.is_valid else []


def job_dimensions(queue: str, job: Envelope[Any] | None) -> dict[str, str]:
    """Ids worth a dimension: job id, attempt, kind, and the account or message id from the payload."""
    dims = {"queue": queue}
    if job is None:
        return dims
    dims.update(job_id=job.id, attempt=str(job.attempt), kind=job.type)
    payload = job.payload
    data = getattr(payload, "data", None)
    for source in (payload, data):
        for attr in ("account_id", "message_id", "thread_id"):
            value = getattr(source, attr, None)
            if isinstance(value, str):
                dims[attr] = value
    return dims


class TelemetryObserver:
    """A ``JobObserver``: a span per job and one structured log record when it ends. Never raises."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer_provider = tracer_provider

    def _tracer(self) -> trace.Tracer:
        return trace.get_tracer(_TRACER_NAME, tracer_provider=self._tracer_provider)

    def before_job(self, queue: str, job: Envelope[Any]) -> None:
        """Start the job's span and make it current for the handler."""
        reset_deduplicated()
        attributes = {f"banxway.{k}": v for k, v in job_dimensions(queue, job).items()}
        attributes.update({"messaging.system": "azure_storage_queue", "messaging.destination.name": queue})
        span = self._tracer().start_span(
            f"{queue} process", kind=SpanKind.CONSUMER, links=_enqueuer_link(job), attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        _current_span.set((span, token))

    def after_job(self, result: JobResult) -> None:
        """End the span with the outcome and write the job-end record."""
        outcome = job_outcome_label(result, deduplicated=job_was_deduplicated())
        dims = job_dimensions(result.queue, result.job)
        self._end_span(result, outcome, dims)
        extra: dict[str, Any] = {**dims, "outcome": outcome, "duration_s": round(result.duration_s, 6)}
        if result.reason:
            extra["reason"] = redact(result.reason)
        if result.error_code:
            extra["error_code"] = result.error_code
        level = logging.WARNING if result.outcome in (Outcome.DEAD_LETTERED, Outcome.FAILED) else logging.INFO
        log.log(
            level, "job finished: queue=%s job_id=%s outcome=%s", result.queue, dims.get("job_id"), outcome,
            extra=extra,
        )

    def _end_span(self, result: JobResult, outcome: str, dims: Mapping[str, str]) -> None:
        current = _current_span.get()
        _current_span.set(None)
        if current is None:  # the message never parsed: a span covering the boundary's time
            start_ns = time.time_ns() - int(result.duration_s * 1e9)
            span = self._tracer().start_span(
                f"{result.queue} process", kind=SpanKind.CONSUMER, start_time=start_ns,
                attributes={f"banxway.{k}": v for k, v in dims.items()},
            )
            token = None
        else:
            span, token = current
        span.set_attribute("banxway.outcome", outcome)
        if result.reason:
            span.set_attribute("banxway.reason", redact(result.reason))
        if result.outcome in (Outcome.DEAD_LETTERED, Outcome.FAILED):
            span.set_status(Status(StatusCode.ERROR, result.error_code or outcome))
        span.end()
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]


# --- metrics as OpenTelemetry instruments ----------------------------------------------------------


class OtelMirror:
    """Records ``shared.metrics`` writes into OpenTelemetry instruments of the same names."""

    def __init__(self, meter_provider: otel_metrics.MeterProvider | None = None) -> None:
        self._meter = otel_metrics.get_meter(_TRACER_NAME, meter_provider=meter_provider)
        self._instruments: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _instrument(self, kind: str, name: str) -> Any:
        key = (kind, name)
        with self._lock:
            if key not in self._instruments:
                unit = "s" if name.endswith("_seconds") else "1"
                help_text = HELP.get(name, "")
                instrument: Any
                if kind == "counter":
                    instrument = self._meter.create_counter(name, unit=unit, description=help_text)
                elif kind == "histogram":
                    instrument = self._meter.create_histogram(name, unit=unit, description=help_text)
                else:
                    instrument = self._meter.create_gauge(name, unit=unit, description=help_text)
                self._instruments[key] = instrument
            return self._instruments[key]

    def add(self, name: str, amount: float, labels: Mapping[str, str]) -> None:
        """Counter ``name`` += ``amount``."""
        self._instrument("counter", name).add(amount, dict(labels))

    def record(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        """Histogram ``name`` observes ``value``."""
        self._instrument("histogram", name).record(value, dict(labels))

    def set(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        """Gauge ``name`` = ``value``."""
        self._instrument("gauge", name).set(value, dict(labels))
