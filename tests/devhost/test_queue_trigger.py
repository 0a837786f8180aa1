"""Queue triggers against Azurite with the host's semantics (tests/devhost/app/host.json: batchSize 4,
newBatchThreshold 1, maxDequeueCount 3, visibilityTimeout 0, messageEncoding base64)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest
from azure.storage.queue import QueueServiceClient

from devhost import LocalHost
from devhost.appsettings import SettingError
from tests.devhost.conftest import APP_ROOT
from tests.devhost.probe import Probe
from tests.support.host import enqueue

Start = Callable[..., LocalHost]


def _raw_messages(service: QueueServiceClient, queue_name: str, timeout_s: float = 10.0, count: int = 1) -> list[str]:
    client = service.get_queue_client(queue_name)
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            seen = [m.content for m in client.peek_messages(max_messages=32)]
        except Exception:  # noqa: BLE001 - the queue may not exist yet
            seen = []
        if len(seen) >= count:
            return seen
        time.sleep(0.1)
    return seen


def _queue_is_empty(service: QueueServiceClient, queue_name: str, timeout_s: float = 5.0) -> bool:
    client = service.get_queue_client(queue_name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get_queue_properties().approximate_message_count == 0:
            return True
        time.sleep(0.1)
    return False


def test_base64_message_reaches_the_function_as_a_queue_message_and_is_deleted(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    local_host(functions=["work"], settings=queue_names, script_root=APP_ROOT)
    message_id = enqueue(queue_service, queue_names["WORK_QUEUE"], '{"a": 1}')

    [call] = probe.wait_for("work", 1)

    assert call["body"] == '{"a": 1}'
    assert call["id"] == message_id
    assert call["dequeue_count"] == 1
    assert call["pop_receipt"]
    assert call["insertion_time"] is not None
    assert call["expiration_time"] > call["insertion_time"]
    assert call["next_visible"] > call["insertion_time"]
    assert _queue_is_empty(queue_service, queue_names["WORK_QUEUE"])


def test_message_that_is_not_base64_goes_to_poison_unprocessed(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    queue = queue_names["WORK_QUEUE"]
    queue_service.create_queue(queue)
    queue_service.get_queue_client(queue).send_message("not base64 {!}")
    local_host(functions=["work"], settings=queue_names, script_root=APP_ROOT)

    assert _raw_messages(queue_service, f"{queue}-poison") == ["not base64 {!}"]
    assert _queue_is_empty(queue_service, queue)
    assert probe.of("work") == []


def test_failing_message_is_retried_with_growing_dequeue_count_and_poisoned_after_max_dequeue_count(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    queue = queue_names["WORK_QUEUE"]
    local_host(functions=["work"], settings=queue_names, script_root=APP_ROOT)
    enqueue(queue_service, queue, "fail")

    poison = _raw_messages(queue_service, f"{queue}-poison", timeout_s=20)

    assert [c["dequeue_count"] for c in probe.of("work")] == [1, 2, 3]  # maxDequeueCount 3, then poison
    assert [base64.b64decode(text) for text in poison] == [b"fail"]  # the stored (encoded) text is copied
    assert _queue_is_empty(queue_service, queue)


def test_max_dequeue_count_is_overridable_by_app_setting(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    queue = queue_names["WORK_QUEUE"]
    settings = {**queue_names, "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2"}
    local_host(functions=["work"], settings=settings, script_root=APP_ROOT)
    enqueue(queue_service, queue, "fail")

    assert len(_raw_messages(queue_service, f"{queue}-poison", timeout_s=20)) == 1
    assert [c["dequeue_count"] for c in probe.of("work")] == [1, 2]


def test_failed_message_waits_visibility_timeout_before_redelivery(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    settings = {**queue_names, "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:02"}
    local_host(functions=["work"], settings=settings, script_root=APP_ROOT)
    enqueue(queue_service, queue_names["WORK_QUEUE"], "fail")

    first, second = probe.wait_for("work", 2, timeout_s=20)[:2]

    assert second["started"] - first["started"] >= 1.9


def test_message_received_beyond_max_dequeue_count_goes_to_poison_without_running(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    queue = queue_names["WORK_QUEUE"]
    enqueue(queue_service, queue, "never runs")
    client = queue_service.get_queue_client(queue)
    for _ in range(3):  # as if three hosts had crashed while holding it
        [message] = client.receive_messages(max_messages=1, visibility_timeout=30)
        client.update_message(message, visibility_timeout=0)
    local_host(functions=["work"], settings=queue_names, script_root=APP_ROOT)

    assert len(_raw_messages(queue_service, f"{queue}-poison")) == 1
    assert probe.of("work") == []


def test_at_most_batch_size_plus_new_batch_threshold_run_at_once(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    settings = {
        **queue_names,
        "AzureFunctionsJobHost__extensions__queues__batchSize": "2",
        "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": "1",
    }
    for index in range(10):
        enqueue(queue_service, queue_names["WORK_QUEUE"], "hold:0.4" if index % 2 == 0 else "hold:1.2")
    host = local_host(functions=["work"], settings=settings, script_root=APP_ROOT)

    probe.wait_for("work", 10, timeout_s=30)

    assert host.config is not None
    assert host.config.queues.concurrency == 3
    assert probe.max_running == 3


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, 2),  # TRANSCRIPTION_WORKER_CONCURRENCY over host.json's 4 + 1
        ({"AzureFunctionsJobHost__extensions__queues__batchSize": "3",
          "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": "0"}, 3),  # the explicit override wins
    ],
    ids=["worker-setting", "explicit-override"],
)
def test_worker_concurrency_setting_limits_its_queue_function_unless_overridden(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str],
    extra: dict[str, str], expected: int,
) -> None:
    queue = f"{queue_names['WORK_QUEUE']}-tr"
    for _ in range(8):
        enqueue(queue_service, queue, "hold:0.6")
    settings = {**queue_names, "TRANSCRIPTION_WORKER_CONCURRENCY": "2", "WORKER_CONCURRENCY": "6", **extra}
    host = local_host(functions=["transcribe_recording", "work"], settings=settings, script_root=APP_ROOT)

    probe.wait_for("transcribe_recording", 8, timeout_s=30)

    assert probe.max_running == expected
    assert host.queue_listeners["transcribe_recording"].options.concurrency == expected
    # "work" is no worker's function: host.json (4 + 1) unless overridden.
    assert host.queue_listeners["work"].options.concurrency == (5 if not extra else 3)


def test_long_running_function_keeps_its_message_invisible(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    local_host(functions=["work"], settings=queue_names, script_root=APP_ROOT, lease_s=2)
    enqueue(queue_service, queue_names["WORK_QUEUE"], "hold:5")

    probe.wait_for("work", 1)
    time.sleep(6)

    assert len(probe.of("work")) == 1  # a 2 s lease renewed every second: never redelivered
    assert _queue_is_empty(queue_service, queue_names["WORK_QUEUE"])


def test_output_binding_value_is_sent_base64_after_success(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    local_host(functions=["work"], settings=queue_names, script_root=APP_ROOT)
    enqueue(queue_service, queue_names["WORK_QUEUE"], "echo:hello")

    sent = _raw_messages(queue_service, f"{queue_names['WORK_QUEUE']}-out")

    assert [base64.b64decode(text) for text in sent] == [b"hello"]


def test_async_function_runs_on_the_event_loop(
    local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    local_host(functions=["other"], settings=queue_names, script_root=APP_ROOT)
    enqueue(queue_service, queue_names["OTHER_QUEUE"], "x")

    assert probe.wait_for("other", 1)[0]["body"] == "x"


def test_missing_queue_name_setting_fails_start_naming_the_setting(local_host: Start, probe: Probe) -> None:
    with pytest.raises(SettingError, match=r"'%WORK_QUEUE%' does not resolve to a value"):
        local_host(functions=["work"], settings={}, script_root=APP_ROOT)


def test_disabled_function_with_a_missing_binding_setting_fails_start_like_the_host(
    local_host: Start, queue_names: dict[str, str]
) -> None:
    settings = {"OTHER_QUEUE": queue_names["OTHER_QUEUE"], "AzureWebJobs.work.Disabled": "true"}

    with pytest.raises(SettingError, match=r"Functions\.work': '%WORK_QUEUE%' does not resolve to a value"):
        local_host(functions=["work", "other"], settings=settings, script_root=APP_ROOT)


def test_disabled_timer_with_a_missing_schedule_setting_fails_start(local_host: Start) -> None:
    with pytest.raises(SettingError, match=r"Functions\.tick': '%TICK_SCHEDULE%'"):
        local_host(functions=["tick"], settings={"AzureWebJobs_tick_Disabled": "1"}, script_root=APP_ROOT)


def test_production_app_starts_with_every_worker_function_disabled_when_binding_settings_are_set(
    local_host: Start, queue_names: dict[str, str]
) -> None:
    # As the ops-only part of any app: every worker function disabled, its binding settings still set.
    workers = ["email_schedule_polls", "email_poll_inbox", "whatsapp_send", "whatsapp_send_priority",
               "transcribe_recording"]
    settings = {f"AzureWebJobs.{name}.Disabled": "true" for name in workers}
    settings.update({"EMAIL_QUEUE_NAME": "email-processing", "WHATSAPP_QUEUE_NAME": "whatsapp-processing",
                     "WHATSAPP_PRIORITY_QUEUE_NAME": "whatsapp-processing-high",
                     "TRANSCRIPTION_QUEUE_NAME": "transcription-processing"})

    with pytest.raises(SettingError, match="EMAIL_POLL_SCHEDULE"):
        local_host(functions=[*workers, "health"], settings=settings)
    host = local_host(functions=[*workers, "health"], settings={**settings, "EMAIL_POLL_SCHEDULE": "0 */5 * * * *"})

    assert host.enabled == ["health"]


@pytest.mark.parametrize("setting", ["AzureWebJobs.work.Disabled", "AzureWebJobs_work_Disabled"])
def test_disabled_queue_function_does_not_run(
    setting: str, local_host: Start, probe: Probe, queue_service: QueueServiceClient, queue_names: dict[str, str]
) -> None:
    host = local_host(functions=["work", "other"], settings={**queue_names, setting: "true"}, script_root=APP_ROOT)
    enqueue(queue_service, queue_names["WORK_QUEUE"], "x")
    enqueue(queue_service, queue_names["OTHER_QUEUE"], "y")

    probe.wait_for("other", 1)
    time.sleep(1)

    assert host.enabled == ["other"]
    assert probe.of("work") == []


def test_double_underscore_disabled_form_is_ignored_like_the_host(
    local_host: Start, queue_names: dict[str, str]
) -> None:
    host = local_host(
        functions=["work"], settings={**queue_names, "AzureWebJobs__work__Disabled": "true"}, script_root=APP_ROOT
    )

    assert host.enabled == ["work"]
