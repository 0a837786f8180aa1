"""Telemetry: configured once and only when nobody else does; a span per job linked to the enqueuer."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.errors import Reject
from shared.jobs import TraceContext
from shared.metrics import Metrics
from shared.outcomes import RetryPolicy, run_job
from shared.queues import QueueOps
from shared.redaction import uninstall_log_redaction
from shared.settings import Settings
from shared.telemetry import OtelMirror, TelemetryObserver, configure_telemetry

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
CONN = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:1/"


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    uninstall_log_redaction()


def _send(trace=None):
    payload = {"action": "SEND_MESSAGE", "data": {"threadId": str(uuid.uuid4()), "to": "+919876543210",
                                                   "messageId": str(uuid.uuid4()), "text": "hi"}}
    from shared.jobs import new_envelope

    return new_envelope("whatsapp", payload, trace=trace)


def test_platform_configured_telemetry_is_not_configured_again():
    calls = []
    env = {"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"}
    settings = Settings.from_env({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN})
    assert configure_telemetry(settings, environ=env, configure=lambda **kw: calls.append(kw)) == "platform"
    assert calls == []


def test_without_a_connection_string_nothing_is_configured():
    calls = []
    assert configure_telemetry(Settings.from_env({}), environ={}, configure=lambda **kw: calls.append(kw)) == "off"
    assert calls == []


def test_off_azure_the_vm_detector_and_statsbeat_stay_off():
    calls, env = [], {}
    settings = Settings.from_env({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN})
    assert configure_telemetry(settings, environ=env, configure=lambda **kw: calls.append(kw)) == "configured"
    assert calls == [{"connection_string": CONN, "logger_name": ""}]
    assert "azure_vm" not in env["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"]
    assert env["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] == "true"


def test_on_azure_the_functions_detector_is_used():
    env = {"WEBSITE_INSTANCE_ID": "abc"}
    settings = Settings.from_env({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN})
    configure_telemetry(settings, environ=env, configure=lambda **_kw: None)
    assert env["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"] == "azure_functions"


def _observer():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return TelemetryObserver(tracer_provider=provider), exporter


def test_each_job_is_a_consumer_span_linked_to_the_enqueuer(queue_service, unique_queue_name, caplog):
    observer, exporter = _observer()
    queue = unique_queue_name("tel")
    job = _send(trace=TraceContext(traceparent=PARENT))
    with caplog.at_level(logging.INFO, logger="shared.telemetry"):
        run_job(kind="whatsapp", queue=queue, body=job.to_json(), message_id="m", handler=lambda _j: None,
                queues=QueueOps(queue_service), policy=RetryPolicy(), observers=[observer])
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.CONSUMER
    assert span.attributes["banxway.job_id"] == job.id
    assert span.attributes["banxway.outcome"] == "completed"
    assert [format(link.context.trace_id, "032x") for link in span.links] == [TRACE_ID]
    [record] = [r for r in caplog.records if r.getMessage().startswith("job finished")]
    assert (record.job_id, record.queue, record.outcome) == (job.id, queue, "completed")
    assert record.message_id == job.payload.data.message_id


def test_a_dead_lettered_job_ends_its_span_in_error_with_a_masked_reason(queue_service, unique_queue_name, caplog):
    observer, exporter = _observer()

    def reject(_job):
        raise Reject("invalid recipient +919876543210")

    with caplog.at_level(logging.INFO, logger="shared.telemetry"):
        run_job(kind="whatsapp", queue=unique_queue_name("tel"), body=_send().to_json(), message_id="m",
                handler=reject, queues=QueueOps(queue_service), policy=RetryPolicy(), observers=[observer])
    [span] = exporter.get_finished_spans()
    assert span.status.is_ok is False
    assert "9876543210" not in span.attributes["banxway.reason"]
    [record] = [r for r in caplog.records if r.getMessage().startswith("job finished")]
    assert record.outcome == "dead_lettered"
    assert "9876543210" not in record.reason


def test_metrics_are_mirrored_into_opentelemetry_instruments(redis_client):
    reader = InMemoryMetricReader()
    metrics = Metrics(redis_client, prefix="test:otel", mirror=OtelMirror(MeterProvider(metric_readers=[reader])))
    metrics.inc("banxway_jobs_total", queue="q", outcome="completed")
    metrics.observe("banxway_job_duration_seconds", 0.5, queue="q")
    metrics.set_gauge("banxway_email_poll_lag_seconds", 3, account_id="a")
    data = json.loads(reader.get_metrics_data().to_json())
    names = {m["name"] for rm in data["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]}
    assert {"banxway_jobs_total", "banxway_job_duration_seconds", "banxway_email_poll_lag_seconds"} <= names
    metrics.clear()
