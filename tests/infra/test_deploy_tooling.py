"""azd wiring, the secrets script and scripts/settings_from_deployment.py agree with main.bicep."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.infra.bicep import INFRA, REPO, BicepFile

KEY_VAULT_SECRET = re.compile(r"SecretName=([a-z0-9-]+)\)")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_from_deployment",
                                                  REPO / "scripts" / "settings_from_deployment.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


def _sample_outputs(main: BicepFile) -> dict[str, Any]:
    """ARM-shaped outputs for every output of main.bicep, with plausible values."""
    outputs: dict[str, Any] = {}
    for name, output in main.outputs.items():
        value = main.eval(output["value"])
        if not isinstance(value, (str, int)) or "${" in str(value) or "(" in str(value):
            value = f"https://example-{name.lower()}.invalid/"
        outputs[name] = {"type": output["type"], "value": value}
    return outputs


def test_azure_yaml_deploys_the_same_project_as_three_function_services(main: BicepFile) -> None:
    text = (REPO / "azure.yaml").read_text(encoding="utf-8")
    services = re.findall(r"^  ([a-z]+):\n    project: \.\n    language: python\n    host: function$", text, re.M)
    assert services == ["email", "whatsapp", "transcription"]
    tagged = {main.module_params(m)["serviceName"] for m in ("emailApp", "whatsappApp", "transcriptionApp")}
    assert tagged == set(services)
    assert re.search(r"^  path: infra$", text, re.M)


def test_azd_parameters_name_real_parameters(main: BicepFile) -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(parameters) <= set(main.parameters)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"


def test_every_key_vault_reference_has_a_writer(app_settings_all_branches: dict[str, dict[str, Any]]) -> None:
    referenced = {
        secret
        for settings in app_settings_all_branches.values()
        for value in settings.values()
        for secret in KEY_VAULT_SECRET.findall(str(value))
    }
    script = (REPO / "scripts" / "set_secrets.sh").read_text(encoding="utf-8")
    written_by_script = dict(re.findall(r'"([A-Z_]+)=([a-z0-9-]+)"', script))
    redis = BicepFile(INFRA / "modules" / "redis.bicep")
    written = set(written_by_script.values()) | {redis.env["redisUrlSecretName"]}
    assert referenced == written
    # The script reads each secret from the variable of the setting that references it.
    for settings in app_settings_all_branches.values():
        for name, value in settings.items():
            for secret in KEY_VAULT_SECRET.findall(str(value)):
                assert secret == redis.env["redisUrlSecretName"] or written_by_script[name] == secret


def test_settings_script_knows_the_secret_settings() -> None:
    script = (REPO / "scripts" / "set_secrets.sh").read_text(encoding="utf-8")
    written = dict(re.findall(r'"([A-Z_]+)=([a-z0-9-]+)"', script))
    assert {k: v for k, v in SCRIPT.SECRET_SETTINGS.items() if k != "REDIS_URL"} == written


def test_settings_script_mirrors_the_worker_functions(main: BicepFile) -> None:
    declared = {app: tuple(names) for app, names in main.env["workerFunctions"].items()}
    assert declared == SCRIPT.WORKER_FUNCTIONS


def test_settings_script_handles_every_output(main: BicepFile) -> None:
    handled = set(SCRIPT._RENAMED) | set(SCRIPT._SAME_NAME) | SCRIPT.IGNORED_OUTPUTS
    assert set(main.outputs) == handled


def test_local_settings_from_arm_outputs_are_identity_based_and_secret_free(main: BicepFile) -> None:
    outputs = SCRIPT.parse_arm_outputs(_sample_outputs(main))
    document = SCRIPT.build_local_settings(outputs)
    values = document["Values"]
    assert document["IsEncrypted"] is False
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage__queueServiceUri"] == outputs["AZURE_STORAGE_QUEUE_ENDPOINT"]
    assert "AzureWebJobsStorage" not in values
    assert values["EMAIL_QUEUE_NAME"] == "email-processing"
    assert values["WHATSAPP_WORKER_CONCURRENCY"] == "10"
    assert not set(SCRIPT.SECRET_SETTINGS) & set(values)
    assert all(isinstance(v, str) for v in values.values())


def test_local_settings_for_one_worker_disable_the_others(main: BicepFile) -> None:
    outputs = SCRIPT.parse_arm_outputs(_sample_outputs(main))
    values = SCRIPT.build_local_settings(outputs, worker="transcription")["Values"]
    disabled = {k.split(".")[1] for k, v in values.items() if k.endswith(".Disabled") and v == "true"}
    assert disabled == {"email_schedule_polls", "email_poll_inbox", "whatsapp_send", "whatsapp_send_priority",
                        "whatsapp_status_callback"}


def test_azd_env_values_are_unquoted() -> None:
    text = 'EMAIL_QUEUE_NAME="email-processing"\nEMAIL_POLL_SCHEDULE="*/30 * * * * *"\n# note\nEMPTY=""\n'
    assert SCRIPT.parse_azd_env(text) == {
        "EMAIL_QUEUE_NAME": "email-processing", "EMAIL_POLL_SCHEDULE": "*/30 * * * * *", "EMPTY": "",
    }


def test_settings_script_refuses_outputs_of_another_template() -> None:
    with pytest.raises(ValueError, match="AZURE_STORAGE_QUEUE_ENDPOINT"):
        SCRIPT.build_local_settings({"SOMETHING": "else"})


def test_settings_script_writes_the_file_and_keeps_an_existing_one(tmp_path: Path, main: BicepFile) -> None:
    outputs_file = tmp_path / "outputs.json"
    outputs_file.write_text(json.dumps(_sample_outputs(main)), encoding="utf-8")
    target = tmp_path / "local.settings.json"
    assert SCRIPT.main(["--outputs", str(outputs_file), "-o", str(target), "--worker", "email"]) == 0
    values = json.loads(target.read_text(encoding="utf-8"))["Values"]
    assert values["AzureWebJobs.transcribe_recording.Disabled"] == "true"
    assert SCRIPT.main(["--outputs", str(outputs_file), "-o", str(target)]) == 2


def test_checkov_script_runs_offline_in_its_own_venv() -> None:
    text = (REPO / "scripts" / "checkov.sh").read_text(encoding="utf-8")
    assert "--skip-download" in text
    assert "--framework bicep" in text
    assert "-d infra" in text
    assert ".venv-checkov" in text
    assert re.search(r'CHECKOV_VERSION="\d+\.\d+\.\d+"', text)
