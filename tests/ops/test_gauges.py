"""Gauges read at scrape time: the per-inbox poll lag from the store and the poller's Redis record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from shared.metrics import EMAIL_LAST_POLL_SUCCESS, EMAIL_POLL_LAG
from shared.ops.gauges import poll_lag_gauges, read_gauges
from tests.support.ops import insert_email_account


def test_poll_lag_is_the_time_since_the_last_successful_poll_by_either_record(make_ops_deps, database_url):
    deps = make_ops_deps()
    now = datetime.now(UTC)
    in_redis = insert_email_account(database_url, last_poll_status="FAILED", last_polled_ago_s=5)
    deps.metrics.set_gauge(EMAIL_LAST_POLL_SUCCESS, (now - timedelta(seconds=600)).timestamp(), account_id=in_redis)
    in_store = insert_email_account(database_url, last_poll_status="SUCCESS", last_polled_ago_s=300)
    both = insert_email_account(database_url, last_poll_status="SUCCESS", last_polled_ago_s=900)
    deps.metrics.set_gauge(EMAIL_LAST_POLL_SUCCESS, (now - timedelta(seconds=60)).timestamp(), account_id=both)
    never = insert_email_account(database_url, last_poll_status="FAILED", last_polled_ago_s=5)
    disabled = insert_email_account(database_url, imap_enabled=False, last_poll_status="SUCCESS",
                                    last_polled_ago_s=5)

    lags = {s.labels["account_id"]: s.value for s in poll_lag_gauges(deps, now=now)}

    assert set(lags) == {in_redis, in_store, both}
    assert never not in lags  # no successful poll yet
    assert disabled not in lags  # not pollable
    assert abs(lags[in_redis] - 600) < 1
    assert abs(lags[in_store] - 300) < 30  # the row's now() and ours differ by the test's own runtime
    assert abs(lags[both] - 60) < 1  # the later of the two records wins


def test_poll_lag_still_answers_from_the_store_when_redis_is_down(make_ops_deps, database_url, throwaway_redis):
    deps = make_ops_deps(REDIS_URL=throwaway_redis.url)
    account = insert_email_account(database_url, last_poll_status="SUCCESS", last_polled_ago_s=120)
    throwaway_redis.stop()
    samples = [s for s in read_gauges(deps) if s.name == EMAIL_POLL_LAG]
    assert [s.labels for s in samples] == [{"account_id": account}]


def test_poll_lag_is_an_opentelemetry_gauge_with_the_account_id_attribute(make_ops_deps, database_url):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from shared.ops.gauges import register_otel_gauges

    deps = make_ops_deps()
    account = insert_email_account(database_url, last_poll_status="SUCCESS", last_polled_ago_s=42)
    reader = InMemoryMetricReader()
    register_otel_gauges(deps, meter_provider=MeterProvider(metric_readers=[reader]), interval_s=0)
    data = json.loads(reader.get_metrics_data().to_json())
    [gauge] = [m for rm in data["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]
               if m["name"] == EMAIL_POLL_LAG]
    [point] = gauge["data"]["data_points"]
    assert point["attributes"] == {"account_id": account}  # what infra/queries/email_poll_lag.kql reads
    assert 30 < point["value"] < 600
