"""The Redis-aggregated metrics registry and the job boundary's metrics observer (real Redis, Azurite)."""

from __future__ import annotations

import json
import logging
import math
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.deps import Deps
from shared.errors import Reject, RetryLater
from shared.metrics import (
    JOB_DURATION,
    JOBS_TOTAL,
    Metrics,
    MetricsObserver,
    mark_deduplicated,
)
from shared.outcomes import Outcome, RetryPolicy, run_job
from shared.queues import QueueOps
from shared.settings import Settings

SEND = {
    "action": "SEND_MESSAGE",
    "data": {
        "threadId": str(uuid.uuid4()),
        "to": "+919876543210",
        "messageId": str(uuid.uuid4()),
        "text": "hello",
    },
}


@pytest.fixture
def metrics(redis_client: redis.Redis) -> Metrics:
    return Metrics(redis_client, prefix=f"test:{uuid.uuid4().hex[:8]}:metrics")


def test_counters_add_up_across_registries_sharing_redis(redis_client, metrics):
    other_instance = Metrics(redis_client, prefix=metrics.prefix)
    metrics.inc(JOBS_TOTAL, queue="q", outcome="completed")
    other_instance.inc(JOBS_TOTAL, 2, queue="q", outcome="completed")
    metrics.inc(JOBS_TOTAL, queue="q", outcome="failed")
    assert metrics.counter_value(JOBS_TOTAL, queue="q", outcome="completed") == 3
    assert other_instance.counter_value(JOBS_TOTAL, outcome="failed", queue="q") == 1
    assert metrics.counter_value(JOBS_TOTAL, queue="other", outcome="completed") == 0


def test_counter_refuses_to_go_down(metrics):
    with pytest.raises(ValueError, match="only goes up"):
        metrics.inc("x_total", -1)


def test_histogram_buckets_are_cumulative_with_count_and_sum(metrics):
    for value in (0.003, 0.2, 0.2, 7.0, 10_000.0):
        metrics.observe(JOB_DURATION, value, queue="q")
    sample = metrics.histogram(JOB_DURATION, queue="q")
    assert sample is not None
    buckets = dict(sample.buckets)
    assert buckets[0.005] == 1
    assert buckets[0.25] == 3
    assert buckets[10.0] == 4
    assert buckets[600.0] == 4
    assert buckets[math.inf] == 5
    assert sample.count == 5
    assert sample.sum == pytest.approx(10_007.403)


def test_gauge_keeps_the_last_value_and_can_be_removed(metrics):
    metrics.set_gauge("banxway_queue_depth", 4, queue="q")
    metrics.set_gauge("banxway_queue_depth", 2, queue="q")
    assert metrics.gauge_value("banxway_queue_depth", queue="q") == 2
    metrics.remove_gauge("banxway_queue_depth", queue="q")
    assert metrics.gauge_value("banxway_queue_depth", queue="q") is None


def test_snapshot_lists_every_kind_with_labels_of_any_characters(metrics):
    metrics.inc("a_total", account_id='we|ird"label')
    metrics.set_gauge("b", 1.5)
    metrics.observe("c_seconds", 0.1, queue="q")
    snap = metrics.snapshot()
    assert snap.counters["a_total"] == [({"account_id": 'we|ird"label'}, 1.0)]
    assert snap.gauges["b"] == [({}, 1.5)]
    assert snap.histograms["c_seconds"][0].labels == {"queue": "q"}
    metrics.clear()
    assert metrics.names() == []


def _run(ops, queue, handler, observers, *, max_attempts=6):
    return run_job(
        kind="whatsapp", queue=queue, body=json.dumps(SEND), message_id="m1", handler=handler, queues=ops,
        policy=RetryPolicy(max_attempts=max_attempts, base_delay_s=0.01, max_delay_s=0.01), observers=observers,
    )


def test_observer_counts_each_outcome_the_boundary_reports(metrics, queue_service, unique_queue_name):
    ops = QueueOps(queue_service)
    queue = unique_queue_name("metrics")
    observer = MetricsObserver(lambda: metrics)

    def rate_limited(_job):
        raise RetryLater("slow down", retry_after_s=0, code="exotel_rate_limited")

    def transient(_job):
        raise RetryLater("503")

    def rejected(_job):
        raise Reject("bad number")

    def duplicate(_job):
        mark_deduplicated()

    def broken(_job):
        raise RuntimeError("bug")

    results = [
        _run(ops, queue, lambda _job: None, [observer]),
        _run(ops, queue, lambda _job: None, [observer]),
        _run(ops, queue, rate_limited, [observer]),
        _run(ops, queue, transient, [observer]),
        _run(ops, queue, rejected, [observer]),
        _run(ops, queue, duplicate, [observer]),
        _run(ops, queue, lambda _job: None, [observer]),  # the duplicate mark does not leak
    ]
    with pytest.raises(RuntimeError):
        _run(ops, queue, broken, [observer])
    assert [r.outcome for r in results].count(Outcome.COMPLETED) == 4

    counts = {
        outcome: metrics.counter_value(JOBS_TOTAL, queue=queue, outcome=outcome)
        for outcome in ("completed", "rate_limited", "retried", "dead_lettered", "deduplicated", "failed")
    }
    assert counts == {
        "completed": 3, "rate_limited": 1, "retried": 1, "dead_lettered": 1, "deduplicated": 1, "failed": 1,
    }
    sample = metrics.histogram(JOB_DURATION, queue=queue)
    assert sample is not None
    assert sample.count == 8


def test_observer_swallows_redis_errors_and_the_job_still_completes(queue_service, unique_queue_name, caplog):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    observer = MetricsObserver(lambda: Metrics(dead))
    ops = QueueOps(queue_service)
    with caplog.at_level(logging.WARNING, logger="shared.metrics"):
        first = _run(ops, unique_queue_name("metrics"), lambda _job: None, [observer])
        second = _run(ops, unique_queue_name("metrics"), lambda _job: None, [observer])
    assert first.outcome is second.outcome is Outcome.COMPLETED
    # Logged once per interval, not once per job.
    assert len([r for r in caplog.records if "job metrics not recorded" in r.getMessage()]) == 1


def test_deps_without_redis_builds_and_registers_the_metrics_observer():
    deps = Deps(Settings.from_env({}))
    assert any(isinstance(o, MetricsObserver) for o in deps.observers)


def test_deps_metrics_writes_to_the_configured_redis(redis_url, redis_client):
    deps = Deps(Settings.from_env({"REDIS_URL": redis_url}))
    deps.metrics.inc("banxway_test_total", queue="q")
    assert Metrics(redis_client).counter_value("banxway_test_total", queue="q") == 1
