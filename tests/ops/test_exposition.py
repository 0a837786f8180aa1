"""/api/metrics: the exposition's counts match what the job boundary did in a run of jobs."""

from __future__ import annotations

import json
import uuid

from prometheus_client.parser import text_string_to_metric_families

from shared.errors import Reject, RetryLater
from shared.metrics import mark_deduplicated
from shared.ops.exposition import render_metrics
from shared.outcomes import Outcome
from tests.support.ops import receive_one


def _send_payload():
    return {
        "action": "SEND_MESSAGE",
        "data": {"threadId": str(uuid.uuid4()), "to": "+919876543210", "messageId": str(uuid.uuid4()), "text": "hi"},
    }


def _samples(text):
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            found[key] = sample.value
    return found


def test_scraped_counts_match_what_the_boundary_did(make_ops_deps):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name

    def rate_limited(_job):
        raise RetryLater("429", retry_after_s=0, code="exotel_rate_limited")

    def reject(_job):
        raise Reject("invalid number")

    def duplicate(_job):
        mark_deduplicated()

    handlers = [lambda _job: None, lambda _job: None, rate_limited, reject, duplicate]
    outcomes = []
    for handler in handlers:
        deps.queues.enqueue(queue, "whatsapp", _send_payload())
        outcomes.append(deps.run_message(receive_one(deps, queue), kind="whatsapp", queue=queue, handler=handler))
    assert [r.outcome for r in outcomes] == [
        Outcome.COMPLETED, Outcome.COMPLETED, Outcome.RETRIED, Outcome.DEAD_LETTERED, Outcome.COMPLETED,
    ]

    samples = _samples(render_metrics(deps).decode())
    def count(outcome):
        return samples.get(("banxway_jobs_total", (("outcome", outcome), ("queue", queue))), 0)

    assert count("completed") == 2
    assert count("rate_limited") == 1
    assert count("dead_lettered") == 1
    assert count("deduplicated") == 1
    assert samples[("banxway_job_duration_seconds_count", (("queue", queue),))] == 5
    assert samples[("banxway_job_duration_seconds_bucket", (("le", "+Inf"), ("queue", queue)))] == 5
    # The retry copy waits on the queue; the rejected job sits on the poison queue.
    assert samples[("banxway_queue_depth", (("queue", queue),))] == 1
    assert samples[("banxway_queue_depth", (("queue", f"{queue}-poison"),))] == 1
    assert samples[("banxway_queue_oldest_age_seconds", (("queue", f"{queue}-poison"),))] >= 0
    assert ("banxway_queue_depth", (("queue", f"{deps.settings.email_queue_name}-poison"),)) in samples


def test_any_instance_answers_for_all(make_ops_deps):
    first = make_ops_deps(database=False)
    second_env = {"REDIS_URL": first.settings.redis_url.get_secret_value()}
    second = make_ops_deps(database=False, **second_env)
    first.metrics.inc("banxway_jobs_total", queue="q", outcome="completed")
    second.metrics.inc("banxway_jobs_total", queue="q", outcome="completed")
    text = render_metrics(second).decode()
    assert _samples(text)[("banxway_jobs_total", (("outcome", "completed"), ("queue", "q")))] == 2


def test_reconciliation_pending_comes_from_the_store(make_ops_deps):
    deps = make_ops_deps()
    samples = _samples(render_metrics(deps).decode())
    assert samples[("banxway_whatsapp_reconciliation_pending", ())] == 0


def test_a_redis_outage_still_serves_queue_gauges(make_ops_deps):
    deps = make_ops_deps(database=False, REDIS_URL="redis://127.0.0.1:1/0")
    samples = _samples(render_metrics(deps).decode())
    assert samples[("banxway_metrics_scrape_errors", (("source", "redis"),))] == 1
    assert ("banxway_queue_depth", (("queue", deps.settings.email_queue_name),)) in samples


def test_domain_metrics_from_handlers_are_exposed(make_ops_deps):
    deps = make_ops_deps(database=False)
    deps.metrics.observe("banxway_ratelimit_wait_seconds", 0.2, limiter="exotel")
    deps.metrics.set_gauge("banxway_email_poll_lag_seconds", 12.5, account_id="a1")
    text = render_metrics(deps).decode()
    samples = _samples(text)
    assert samples[("banxway_ratelimit_wait_seconds_count", (("limiter", "exotel"),))] == 1
    assert samples[("banxway_email_poll_lag_seconds", (("account_id", "a1"),))] == 12.5
    assert json.dumps(text)  # plain text, no binary


def test_circuit_state_is_read_from_the_breakers_in_redis(make_ops_deps):
    from shared.coordination.circuit import CircuitBreaker

    deps = make_ops_deps(database=False)
    name = f"test-{uuid.uuid4().hex[:8]}"
    breaker = CircuitBreaker(deps.redis, name, failure_threshold=2, cooldown_s=60)
    try:
        breaker.before_call()
        breaker.record_failure()
        breaker.record_failure()
        samples = _samples(render_metrics(deps).decode())
        assert samples[("banxway_circuit_state", (("circuit", name),))] == 2
    finally:
        deps.redis.delete(f"bxw:circuit:{name}")


def test_queue_gauges_are_observable_opentelemetry_gauges(make_ops_deps):
    import json as _json

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from shared.ops.gauges import register_otel_gauges

    deps = make_ops_deps(database=False)
    deps.queues.enqueue(deps.settings.email_queue_name, "email", {"action": "POLL_ALL_INBOXES"})
    reader = InMemoryMetricReader()
    register_otel_gauges(deps, meter_provider=MeterProvider(metric_readers=[reader]))
    data = _json.loads(reader.get_metrics_data().to_json())
    points = {
        (m["name"], p["attributes"].get("queue")): p["value"]
        for rm in data["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]
        for p in m["data"]["data_points"]
    }
    assert points[("banxway_queue_depth", deps.settings.email_queue_name)] == 1
    assert ("banxway_queue_oldest_age_seconds", f"{deps.settings.email_queue_name}-poison") in points
