"""Timer triggers: %SETTING% schedules, one run at a time, runOnStartup, past_due from the schedule monitor."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from devhost import LocalHost
from devhost.appsettings import SettingError
from devhost.ncrontab import CrontabError, parse_schedule
from devhost.timers import ScheduleMonitor
from tests.devhost.conftest import APP_ROOT
from tests.devhost.probe import Probe

Start = Callable[..., LocalHost]


def test_schedule_from_setting_runs_one_invocation_at_a_time(
    local_host: Start, probe: Probe, queue_names: dict[str, str]
) -> None:
    local_host(functions=["tick"], settings=queue_names, script_root=APP_ROOT)  # every second, runs 2.5 s

    calls = probe.wait_for("tick", 2, timeout_s=10)

    assert probe.max_running == 1
    assert calls[1]["started"] - calls[0]["started"] >= 2.5  # ticks during a run are skipped
    assert [c["past_due"] for c in calls] == [False, False]


def test_missing_schedule_setting_fails_start(local_host: Start, probe: Probe) -> None:
    with pytest.raises(SettingError, match=r"'%TICK_SCHEDULE%' does not resolve"):
        local_host(functions=["tick"], settings={}, script_root=APP_ROOT)


def test_invalid_schedule_fails_start_naming_the_function(local_host: Start, probe: Probe) -> None:
    with pytest.raises(SettingError, match=r"Function tick: invalid schedule"):
        local_host(functions=["tick"], settings={"TICK_SCHEDULE": "every minute"}, script_root=APP_ROOT)


def test_run_on_startup_runs_once_at_start(local_host: Start, probe: Probe) -> None:
    local_host(functions=["startup"], script_root=APP_ROOT)

    [call] = probe.wait_for("startup", 1)

    assert call["past_due"] is False
    assert call["invocation_id"]


def test_missed_occurrence_recorded_by_the_monitor_runs_at_start_as_past_due(
    local_host: Start, probe: Probe, storage_connection_string: str
) -> None:
    host_id = f"devhost-test-{time.monotonic_ns()}"
    with BlobServiceClient.from_connection_string(storage_connection_string) as blobs:
        ScheduleMonitor(blobs, host_id).write("monitored", None, datetime.now(UTC) - timedelta(minutes=5))
    local_host(functions=["monitored"], settings={"AzureFunctionsWebHost__hostid": host_id}, script_root=APP_ROOT)

    [call] = probe.wait_for("monitored", 1)

    assert call["past_due"] is True


def test_monitor_without_a_recorded_miss_does_not_run_at_start(
    local_host: Start, probe: Probe, storage_connection_string: str
) -> None:
    host_id = f"devhost-test-{time.monotonic_ns()}"
    local_host(functions=["monitored"], settings={"AzureFunctionsWebHost__hostid": host_id}, script_root=APP_ROOT)
    time.sleep(1)

    assert probe.of("monitored") == []
    with BlobServiceClient.from_connection_string(storage_connection_string) as blobs:
        status = ScheduleMonitor(blobs, host_id).read("monitored")
    assert status is not None
    assert datetime.fromisoformat(status["Next"]) > datetime.now(UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/30 * * * * *", "2026-01-01T00:00:10", "2026-01-01T00:00:30"),
        ("0 */5 * * * *", "2026-01-01T00:00:10", "2026-01-01T00:05:00"),
        ("*/5 * * * *", "2026-01-01T00:00:10", "2026-01-01T00:05:00"),  # five fields: second 0
        ("0 0 9 * * MON-FRI", "2026-01-02T10:00:00", "2026-01-05T09:00:00"),  # Fri after 9 -> Mon
        ("0 30 9 1 JAN *", "2026-01-01T09:30:00", "2027-01-01T09:30:00"),
        ("0 0 0 * * 0", "2026-01-01T00:00:00", "2026-01-04T00:00:00"),  # Sunday is 0
    ],
)
def test_ncrontab_next_occurrence(expression: str, after: str, expected: str) -> None:
    moment = datetime.fromisoformat(after).replace(tzinfo=UTC)

    assert parse_schedule(expression).next_after(moment) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * * *", "*/0 * * * * *", "0 0 0 * FOO *"])
def test_ncrontab_rejects_bad_expressions(expression: str) -> None:
    with pytest.raises(CrontabError):
        parse_schedule(expression)
