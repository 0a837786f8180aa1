"""The send handler records its rate-limiter wait as ``banxway_ratelimit_wait_seconds{limiter, lane}``: the name
and labels infra/queries/ratelimit_waits.kql and the saturation alert read (customMetrics, through the mirror)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared.coordination.ratelimit import Lane
from shared.metrics import RATELIMIT_WAIT, Metrics
from shared.outcomes import Outcome, RetryPolicy, run_job
from shared.telemetry import OtelMirror
from shared.whatsapp.handler import WhatsAppServices, handle_send
from tests.whatsapp.conftest import RecordingQueues


def _send(message_id: str, thread_id: str, services: WhatsAppServices, queues: RecordingQueues, lane: Lane) -> Any:
    body = json.dumps({"action": "SEND_MESSAGE",
                       "data": {"threadId": thread_id, "to": "+919876543210", "messageId": message_id, "text": "hi"}})
    return run_job(kind="whatsapp", queue="whatsapp-processing", body=body, message_id="qm-1",
                   handler=lambda job: handle_send(job, services, lane=lane), queues=queues,  # type: ignore[arg-type]
                   policy=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, max_age_s=3600))


def test_each_send_records_its_limiter_wait_with_the_limiter_and_lane_labels(
    make_services: Callable[..., WhatsAppServices], make_message: Callable[[], tuple[str, str]],
    queues: RecordingQueues, redis_client: redis.Redis,
) -> None:
    reader = InMemoryMetricReader()
    metrics = Metrics(redis_client, prefix=f"test:{uuid.uuid4().hex[:8]}",
                      mirror=OtelMirror(MeterProvider(metric_readers=[reader])))
    services = dataclasses.replace(make_services(), metrics=metrics)
    for lane in (Lane.BULK, Lane.BULK, Lane.HIGH):
        assert _send(*make_message(), services, queues, lane).outcome is Outcome.COMPLETED

    bulk = metrics.histogram(RATELIMIT_WAIT, limiter="exotel", lane="bulk")
    high = metrics.histogram(RATELIMIT_WAIT, limiter="exotel", lane="high")
    assert bulk is not None
    assert bulk.count == 2
    assert high is not None
    assert high.count == 1

    data = json.loads(reader.get_metrics_data().to_json())
    [histogram] = [m for rm in data["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]
                   if m["name"] == RATELIMIT_WAIT]
    points = histogram["data"]["data_points"]
    assert {(p["attributes"]["limiter"], p["attributes"]["lane"]): p["count"] for p in points} == {
        ("exotel", "bulk"): 2, ("exotel", "high"): 1,
    }
    assert histogram["unit"] == "s"
    metrics.clear()
