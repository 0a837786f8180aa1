"""local.settings.json loading (as `func start`), host.json overrides, indexing, and the CLI process."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from devhost import LocalHost
from devhost.appsettings import SettingError, apply_local_settings, load_local_settings
from devhost.hostconfig import WORKER_QUEUE_FUNCTIONS, HostConfig, HostConfigError, load_host_config
from devhost.index import index_app, load_app_module
from tests.devhost.conftest import APP_ROOT
from tests.devhost.probe import Probe
from tests.support.host import HostProcess

Start = Callable[..., LocalHost]


def _settings_file(tmp_path: Path, values: dict[str, str]) -> Path:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8")
    return path


def test_local_settings_values_fill_the_environment_but_do_not_override_set_variables() -> None:
    environ = {"SET": "from-env", "EMPTY": ""}

    skipped = apply_local_settings({"SET": "from-file", "EMPTY": "from-file", "NEW": "from-file"}, environ)

    assert environ == {"SET": "from-env", "EMPTY": "from-file", "NEW": "from-file"}
    assert skipped == ["SET"]


def test_encrypted_or_invalid_local_settings_fail_clearly(tmp_path: Path) -> None:
    encrypted = tmp_path / "enc.json"
    encrypted.write_text('{"IsEncrypted": true, "Values": {}}', encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")

    with pytest.raises(SettingError, match="encrypted"):
        load_local_settings(encrypted)
    with pytest.raises(SettingError, match="not valid JSON"):
        load_local_settings(broken)
    assert load_local_settings(tmp_path / "missing.json") == {}


def test_queue_name_comes_from_local_settings_file(
    local_host: Start, probe: Probe, tmp_path: Path, queue_names: dict[str, str]
) -> None:
    settings_file = _settings_file(tmp_path, {"WORK_QUEUE": queue_names["WORK_QUEUE"], "MARKER": "loaded"})

    host = local_host(functions=["work"], script_root=APP_ROOT, settings_file=settings_file)

    assert host.queue_listeners["work"].queue_name == queue_names["WORK_QUEUE"]
    assert os.environ["MARKER"] == "loaded"


def test_environment_is_restored_after_the_fixture_host_stops(local_host: Start, tmp_path: Path) -> None:
    host = local_host(functions=["open_route"], script_root=APP_ROOT, settings={"DEVHOST_TEST_ONLY": "1"})
    host.stop()

    assert "DEVHOST_TEST_ONLY" not in os.environ


def test_host_json_values_and_app_setting_overrides(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(
        json.dumps(
            {"extensions": {"queues": {"batchSize": 4, "newBatchThreshold": 1, "visibilityTimeout": "00:00:30"}}}
        ),
        encoding="utf-8",
    )
    environ = {
        "AzureFunctionsJobHost__extensions__queues__batchSize": "1",
        "azurefunctionsjobhost__Extensions__Queues__NewBatchThreshold": "0",
    }

    config = load_host_config(tmp_path / "host.json", environ)

    assert (config.queues.batch_size, config.queues.new_batch_threshold, config.queues.concurrency) == (1, 0, 1)
    assert config.queues.visibility_timeout_s == 30
    assert config.queues.message_encoding == "base64"
    assert config.route_prefix == "api"
    with pytest.raises(HostConfigError, match="batchSize"):
        load_host_config(tmp_path / "host.json", {"AzureFunctionsJobHost__extensions__queues__batchSize": "33"})


def _concurrency(config: HostConfig, *functions: str) -> list[tuple[int, int]]:
    return [(config.queues_for(f).batch_size, config.queues_for(f).new_batch_threshold) for f in functions]


def test_worker_concurrency_settings_set_their_workers_queue_functions_over_host_json(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(
        json.dumps({"extensions": {"queues": {"batchSize": 4, "newBatchThreshold": 1}}}), encoding="utf-8"
    )
    environ = {"WORKER_CONCURRENCY": "2", "WHATSAPP_WORKER_CONCURRENCY": "7", "EMAIL_WORKER_CONCURRENCY": ""}

    config = load_host_config(tmp_path / "host.json", environ)

    # The per-worker setting wins over WORKER_CONCURRENCY; empty counts as unset; N = ceil(N/2) + floor(N/2).
    assert _concurrency(config, "whatsapp_send", "whatsapp_send_priority") == [(4, 3), (4, 3)]
    assert _concurrency(config, "email_poll_inbox", "transcribe_recording") == [(1, 1), (1, 1)]
    assert _concurrency(config, "work") == [(4, 1)]  # not a worker's function: host.json
    assert config.queues_for("whatsapp_send").visibility_timeout_s == config.queues.visibility_timeout_s
    assert set(WORKER_QUEUE_FUNCTIONS) == {"email", "whatsapp", "transcription"}


def test_without_worker_concurrency_settings_host_json_applies_to_every_queue_function(tmp_path: Path) -> None:
    config = load_host_config(tmp_path / "host.json", {"WORKER_CONCURRENCY": " "})

    assert config.function_queues == {}
    assert config.queues_for("email_poll_inbox") == config.queues


@pytest.mark.parametrize(
    "override",
    [
        "AzureFunctionsJobHost__extensions__queues__batchSize",
        "azurefunctionsjobhost__extensions__queues__newbatchthreshold",
    ],
)
def test_explicit_host_queue_override_wins_over_worker_concurrency(tmp_path: Path, override: str) -> None:
    environ = {override: "2", "TRANSCRIPTION_WORKER_CONCURRENCY": "9", "WORKER_CONCURRENCY": "9"}

    config = load_host_config(tmp_path / "host.json", environ)

    assert config.queues_for("transcribe_recording") == config.queues
    assert config.queues.concurrency != 9


@pytest.mark.parametrize("value", ["0", "65", "five"])
def test_invalid_worker_concurrency_fails_naming_the_setting(tmp_path: Path, value: str) -> None:
    with pytest.raises(HostConfigError, match="EMAIL_WORKER_CONCURRENCY"):
        load_host_config(tmp_path / "host.json", {"EMAIL_WORKER_CONCURRENCY": value})


def test_production_app_indexes_with_the_health_route() -> None:
    specs = {spec.name: spec for spec in index_app(load_app_module(Path(__file__).resolve().parents[2]))}

    assert specs["health"].trigger["route"] == "health"
    assert specs["health"].trigger["authLevel"] == "ANONYMOUS"


def test_unknown_function_name_fails_start(local_host: Start) -> None:
    with pytest.raises(SettingError, match="unknown functions"):
        local_host(functions=["nope"], script_root=APP_ROOT)


def test_cli_serves_the_production_health_route_and_stops_on_sigint(
    local_host_process: Callable[..., HostProcess],
) -> None:
    host = local_host_process(functions=["health"])

    with urllib.request.urlopen(f"{host.base_url}/api/health", timeout=5) as response:  # noqa: S310
        assert json.loads(response.read()) == {"status": "ok"}
    assert host.stop(signal.SIGINT) == 0
    assert "Host stopped" in host.log()
