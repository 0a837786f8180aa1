"""The three Flex Consumption apps: one package, one worker each, the seed's scaling as parameter defaults."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.bicep import INFRA, BicepFile

# Fixed function names (the code registers them; scripts/settings_from_deployment.py mirrors them).
WORKER_FUNCTIONS = {
    "email": {"email_schedule_polls", "email_poll_inbox"},
    "whatsapp": {"whatsapp_send", "whatsapp_send_priority", "whatsapp_status_callback"},
    "transcription": {"transcribe_recording"},
}
OPS_FUNCTIONS = {"health", "health_ready", "metrics"}
ALL_WORKER_FUNCTIONS = set().union(*WORKER_FUNCTIONS.values())

# Seed guide: minimum instances and per-instance concurrency per worker.
SEED_MIN_INSTANCES = {"email": 1, "whatsapp": 2, "transcription": 1}
SEED_CONCURRENCY = {"email": 5, "whatsapp": 10, "transcription": 3}
PREFIX = {"email": "email", "whatsapp": "whatsapp", "transcription": "transcription"}
# The queue-triggered function that carries each worker's minimum instances.
MAIN_QUEUE_FUNCTION = {
    "email": "email_poll_inbox", "whatsapp": "whatsapp_send", "transcription": "transcribe_recording",
}


def _enabled(settings: dict[str, Any], functions: set[str]) -> set[str]:
    return {name for name in functions if settings.get(f"AzureWebJobs.{name}.Disabled") != "true"}


def test_main_declares_the_fixed_worker_function_names(main: BicepFile) -> None:
    declared = {app: set(names) for app, names in main.env["workerFunctions"].items()}
    assert declared == WORKER_FUNCTIONS


def test_each_worker_function_is_enabled_in_exactly_one_app(app_settings: dict[str, dict[str, Any]]) -> None:
    for function in ALL_WORKER_FUNCTIONS:
        enabled_in = [app for app, settings in app_settings.items() if function in _enabled(settings, {function})]
        assert len(enabled_in) == 1, f"{function} enabled in {enabled_in}"


def test_each_app_enables_exactly_its_own_worker_functions(app_settings: dict[str, dict[str, Any]]) -> None:
    for app, settings in app_settings.items():
        assert _enabled(settings, ALL_WORKER_FUNCTIONS) == WORKER_FUNCTIONS[app]


def test_ops_endpoints_are_enabled_in_every_app(app_settings: dict[str, dict[str, Any]]) -> None:
    for settings in app_settings.values():
        assert _enabled(settings, OPS_FUNCTIONS) == OPS_FUNCTIONS
        disabled = {k for k in settings if k.startswith("AzureWebJobs.") and k.endswith(".Disabled")}
        assert all(k.split(".")[1] in ALL_WORKER_FUNCTIONS for k in disabled)


def test_function_names_can_be_disabled_on_linux() -> None:
    # AzureWebJobs.<name>.Disabled does not work on Linux for names with hyphens (Microsoft docs).
    for name in ALL_WORKER_FUNCTIONS | OPS_FUNCTIONS:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)


def test_the_functions_the_code_registers_are_exactly_those_the_apps_know() -> None:
    import function_app

    function_app.app.functions_bindings = {}  # get_functions() is one-shot per process
    registered = {f.get_function_name() for f in function_app.app.get_functions()}
    # A function missing from main.bicep's workerFunctions would run in all three apps.
    unknown = registered - ALL_WORKER_FUNCTIONS - OPS_FUNCTIONS
    assert not unknown, f"functions not assigned to an app in infra/main.bicep: {sorted(unknown)}"
    # A name in main.bicep that the code does not register disables nothing and hides a typo.
    stale = (ALL_WORKER_FUNCTIONS | OPS_FUNCTIONS) - registered
    assert not stale, f"infra/main.bicep names functions the app does not register: {sorted(stale)}"


def test_the_three_apps_run_one_deployment_package(main: BicepFile) -> None:
    modules = [main.modules[m]["config"]["params"] for m in ("emailApp", "whatsappApp", "transcriptionApp")]
    packages = {json.dumps(m["deploymentContainerUrl"], sort_keys=True) for m in modules}
    assert len(packages) == 1
    paths = {main.modules[m]["detail"]["path"] for m in ("emailApp", "whatsappApp", "transcriptionApp")}
    assert paths == {"modules/functionapp.bicep"}


def test_app_names_give_distinct_host_ids(main: BicepFile) -> None:
    # The host ID is the first 32 characters of the app name; the apps share one storage account.
    token_length = 13  # uniqueString()
    names = [main.module_params(m)["name"] for m in ("emailApp", "whatsappApp", "transcriptionApp")]
    prefixes = [name.split("${resourceToken}")[0] for name in names]
    assert all(len(p) + token_length <= 32 for p in prefixes), prefixes
    assert len(set(prefixes)) == 3


def test_each_app_is_flex_consumption_on_its_own_plan(apps: dict[str, BicepFile]) -> None:
    for app in apps.values():
        plan = app.resource_config("plan")
        assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
        assert plan["properties"]["reserved"] is True
        site = app.resource_config("app")
        assert site["kind"] == "functionapp,linux"
        assert app.eval(site["properties"]["serverFarmId"]) == "plan.id"


def test_apps_run_python_311_from_the_blob_container_with_the_managed_identity(apps: dict[str, BicepFile]) -> None:
    for app in apps.values():
        config = app.eval(app.resource_config("app")["properties"]["functionAppConfig"])
        assert config["runtime"] == {"name": "python", "version": "3.11"}
        storage = config["deployment"]["storage"]
        assert storage["type"] == "blobContainer"
        assert storage["authentication"]["type"] == "UserAssignedIdentity"
        assert storage["authentication"]["userAssignedIdentityResourceId"] == app.env["identityId"]


@pytest.mark.parametrize("app", sorted(SEED_MIN_INSTANCES))
def test_always_ready_defaults_to_the_seed_minimum(apps: dict[str, BicepFile], app: str) -> None:
    scale = apps[app].eval(apps[app].resource_config("app")["properties"]["functionAppConfig"])["scaleAndConcurrency"]
    ready = {entry["name"]: entry["instanceCount"] for entry in scale["alwaysReady"]}
    assert ready[f"function:{MAIN_QUEUE_FUNCTION[app]}"] == SEED_MIN_INSTANCES[app]
    for group in ready:
        assert group.removeprefix("function:") in WORKER_FUNCTIONS[app], f"{app}: always-ready for {group}"


def test_priority_lane_gets_always_ready_instances_only_when_asked() -> None:
    def groups(priority: int) -> dict[str, int]:
        main = BicepFile(INFRA / "main.bicep", overrides={"whatsappPriorityAlwaysReady": priority})
        return {g["name"]: g["instanceCount"] for g in main.module_params("whatsappApp")["alwaysReady"]}

    assert groups(0) == {"function:whatsapp_send": 2}
    assert groups(1) == {"function:whatsapp_send": 2, "function:whatsapp_send_priority": 1}


@pytest.mark.parametrize("app", sorted(SEED_CONCURRENCY))
def test_queue_concurrency_defaults_to_the_seed_per_instance(
    main: BicepFile, app_settings: dict[str, dict[str, Any]], app: str
) -> None:
    batch = main.env[f"{PREFIX[app]}QueueBatchSize"]
    threshold = main.env[f"{PREFIX[app]}QueueNewBatchThreshold"]
    assert batch + threshold == SEED_CONCURRENCY[app]
    assert 1 <= batch <= 32
    settings = app_settings[app]
    assert settings["AzureFunctionsJobHost__extensions__queues__batchSize"] == str(batch)
    assert settings["AzureFunctionsJobHost__extensions__queues__newBatchThreshold"] == str(threshold)
    assert settings[f"{app.upper()}_WORKER_CONCURRENCY"] == str(SEED_CONCURRENCY[app])


@pytest.mark.parametrize("app", sorted(SEED_CONCURRENCY))
def test_scaling_knobs_are_described_parameters_with_limits(main: BicepFile, app: str) -> None:
    prefix = PREFIX[app]
    maximum = main.decorators(f"{prefix}MaximumInstanceCount")
    assert maximum["min_value"] == 1
    assert maximum["max_value"] == 1000
    assert "40" in maximum["description"]
    assert "preview" in maximum["description"]
    assert main.decorators(f"{prefix}InstanceMemoryMB")["allowed"] == [512, 2048, 4096]
    assert main.decorators(f"{prefix}QueueBatchSize")["max_value"] == 32
    assert "seed" in main.decorators(f"{prefix}AlwaysReady")["description"].lower()


def test_instance_limits_and_memory_reach_each_app(apps: dict[str, BicepFile], main: BicepFile) -> None:
    for app, module in apps.items():
        scale = module.eval(module.resource_config("app")["properties"]["functionAppConfig"])["scaleAndConcurrency"]
        assert scale["maximumInstanceCount"] == main.env[f"{PREFIX[app]}MaximumInstanceCount"]
        assert scale["instanceMemoryMB"] == main.env[f"{PREFIX[app]}InstanceMemoryMB"]


def test_no_setting_flex_rejects(app_settings: dict[str, dict[str, Any]]) -> None:
    deprecated = {
        "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT", "ENABLE_ORYX_BUILD", "WEBSITE_TIME_ZONE",
    }
    for settings in app_settings.values():
        assert not deprecated & set(settings)
