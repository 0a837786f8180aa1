"""App settings against the code's Settings model: nothing the code needs is missing, no secret is plain."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import SecretStr

from shared.settings import Settings
from tests.infra.bicep import INFRA, BicepFile

KEY_VAULT_REFERENCE = re.compile(
    r"@Microsoft\.KeyVault\(VaultName=kv-\$\{resourceToken\};SecretName=(?P<secret>[a-z0-9-]+)\)"
)

# Settings the platform (host, worker, exporter) reads rather than shared/settings.py.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS",
    "AzureFunctionsJobHost__extensions__queues__batchSize",
    "AzureFunctionsJobHost__extensions__queues__newBatchThreshold",
}

# Not a credential: App Insights local auth is off, so ingestion needs an Entra token as well
# (APPLICATIONINSIGHTS_AUTHENTICATION_STRING). The only SecretStr field allowed as a plain value.
NOT_SECRET_IN_AZURE = {"APPLICATIONINSIGHTS_CONNECTION_STRING"}

# What each worker cannot run without, beyond what every app gets.
COMMON_NEEDS = {"REDIS_URL", "EMAIL_QUEUE_NAME", "WHATSAPP_QUEUE_NAME", "WHATSAPP_PRIORITY_QUEUE_NAME",
                "TRANSCRIPTION_QUEUE_NAME", "APPLICATIONINSIGHTS_CONNECTION_STRING"}
WORKER_NEEDS = {
    "email": {"EMAIL_ENCRYPTION_KEY", "EMAIL_POLL_SCHEDULE", "EMAIL_ATTACHMENTS_CONTAINER"},
    "whatsapp": {"EXOTEL_SID", "EXOTEL_API_KEY", "EXOTEL_TOKEN", "EXOTEL_API_URL", "EXOTEL_WHATSAPP_NUMBER",
                 "EXOTEL_CALLBACK_SECRET"},
    # Recordings are downloaded with Exotel credentials.
    "transcription": {"OPENAI_API_KEY", "EXOTEL_SID", "EXOTEL_API_KEY", "EXOTEL_TOKEN"},
}
SECRET_NAME_PATTERN = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|_URL)$")


def _aliases() -> dict[str, Any]:
    return {field.alias: field for field in Settings.model_fields.values() if field.alias}


def _is_secret(field: Any) -> bool:
    return SecretStr in typing.get_args(field.annotation) or field.annotation is SecretStr


def _set_anywhere(settings: dict[str, dict[str, Any]]) -> set[str]:
    return set().union(*(set(s) for s in settings.values()))


def test_every_setting_the_code_reads_is_set_by_bicep_or_optional(
    app_settings_all_branches: dict[str, dict[str, Any]],
) -> None:
    set_by_bicep = _set_anywhere(app_settings_all_branches)
    missing = [alias for alias, field in _aliases().items() if field.is_required() and alias not in set_by_bicep]
    assert not missing, f"required by shared/settings.py but set by no app: {missing}"


def test_required_settings_are_set_in_every_app(app_settings_all_branches: dict[str, dict[str, Any]]) -> None:
    required = {alias for alias, field in _aliases().items() if field.is_required()}
    for app, settings in app_settings_all_branches.items():
        assert required <= set(settings), f"{app} lacks {sorted(required - set(settings))}"


def test_each_app_sets_what_its_worker_needs(app_settings: dict[str, dict[str, Any]]) -> None:
    for app, settings in app_settings.items():
        needed = COMMON_NEEDS | WORKER_NEEDS[app]
        assert needed <= set(settings), f"{app} lacks {sorted(needed - set(settings))}"
        assert "DATABASE_URL" in settings or {"SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"} <= set(settings)


def test_both_database_backends_can_be_configured(main_all_branches: BicepFile) -> None:
    store = main_all_branches.env["storeSettings"]
    assert {"DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"} <= set(store)


def test_every_bicep_setting_is_read_by_the_code_or_the_platform(
    app_settings_all_branches: dict[str, dict[str, Any]],
) -> None:
    known = set(_aliases()) | PLATFORM_SETTINGS
    for app, settings in app_settings_all_branches.items():
        unknown = {
            name for name in settings
            if name not in known and not re.fullmatch(r"AzureWebJobs\.[A-Za-z0-9_]+\.Disabled", name)
        }
        assert not unknown, f"{app} sets settings nothing reads (typo?): {sorted(unknown)}"


def test_secret_settings_are_key_vault_references(app_settings_all_branches: dict[str, dict[str, Any]]) -> None:
    secret_aliases = {alias for alias, field in _aliases().items() if _is_secret(field)} - NOT_SECRET_IN_AZURE
    assert {"REDIS_URL", "DATABASE_URL", "EXOTEL_TOKEN", "OPENAI_API_KEY"} <= secret_aliases
    for app, settings in app_settings_all_branches.items():
        for name in secret_aliases & set(settings):
            assert KEY_VAULT_REFERENCE.fullmatch(str(settings[name])), f"{app}.{name} is not a Key Vault reference"


def test_no_plain_secret_values(app_settings_all_branches: dict[str, dict[str, Any]]) -> None:
    allowed_plain = {"SUPABASE_URL", "EXOTEL_API_URL", "OPENAI_BASE_URL", "EXOTEL_STATUS_CALLBACK_URL"}
    for app, settings in app_settings_all_branches.items():
        for name, value in settings.items():
            if SECRET_NAME_PATTERN.search(name) and name not in allowed_plain:
                assert KEY_VAULT_REFERENCE.fullmatch(str(value)), f"{app}.{name} looks secret but is plain"
            assert "AccountKey=" not in str(value), f"{app}.{name}"
            assert "listKeys" not in str(value), f"{app}.{name}"


def test_secret_values_never_pass_through_the_deployment(main: BicepFile) -> None:
    # Secrets are written by scripts/set_secrets.sh (or redis.bicep from the cache's own key), so no
    # parameter carries one and deployment history holds none.
    assert not [name for name in main.parameters if "secure" in main.decorators(name)]


def test_host_storage_is_identity_based(app_settings_all_branches: dict[str, dict[str, Any]], main: BicepFile) -> None:
    for app, settings in app_settings_all_branches.items():
        assert "AzureWebJobsStorage" not in settings, f"{app} has a storage connection string"
        assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
        for service in ("blob", "queue", "table"):
            assert settings[f"AzureWebJobsStorage__{service}ServiceUri"], f"{app} lacks the {service} URI"
        assert settings["AzureWebJobsStorage__clientId"]


def test_telemetry_goes_through_opentelemetry_with_entra_auth(app_settings: dict[str, dict[str, Any]]) -> None:
    for settings in app_settings.values():
        assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
        assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]
        assert "Authorization=AAD" in settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
        # The Azure VM detector would call the instance metadata service; Functions has its own detector.
        assert "azure_vm" not in settings["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"]


def test_key_vault_references_use_the_apps_identity(apps: dict[str, BicepFile]) -> None:
    for app in apps.values():
        site = app.resource_config("app")
        assert app.eval(site["properties"]["keyVaultReferenceIdentity"]) == app.env["identityId"]


def test_bicep_defaults_match_the_code_defaults(app_settings: dict[str, dict[str, Any]]) -> None:
    # Queue names, schedule and containers must agree with shared/settings.py, or a local run and Azure differ.
    aliases = _aliases()
    for name in ("EMAIL_QUEUE_NAME", "WHATSAPP_QUEUE_NAME", "WHATSAPP_PRIORITY_QUEUE_NAME",
                 "TRANSCRIPTION_QUEUE_NAME", "EMAIL_POLL_SCHEDULE", "EMAIL_POLL_INTERVAL",
                 "EMAIL_ATTACHMENTS_CONTAINER", "EXOTEL_API_URL", "DATABASE_POOL_MAX_SIZE"):
        values = {settings[name] for settings in app_settings.values() if name in settings}
        assert values == {str(aliases[name].default)}, name


def test_settings_validate_with_the_code(app_settings: dict[str, dict[str, Any]]) -> None:
    # Stand-ins for what only exists after deployment (Key Vault resolves secrets, outputs fill URIs).
    for settings in app_settings.values():
        resolved = {
            name: ("rediss://:key@host:10000/0" if name == "REDIS_URL"
                   else "postgresql://u:p@host/db" if name == "DATABASE_URL"
                   else "https://account.queue.core.windows.net/" if name.endswith("ServiceUri")
                   else "resolved" if not isinstance(value, str) or "${" in value or value.startswith("@")
                   else value)
            for name, value in settings.items()
        }
        Settings.from_env(resolved)


def test_extra_settings_tune_knobs_but_never_replace_bicep_settings() -> None:
    extra = {
        "EMAIL_BACKFILL_DAYS": "14",
        "EMAIL_QUEUE_NAME": "elsewhere",
        "AzureFunctionsJobHost__extensions__queues__batchSize": "32",
        "EMAIL_ENCRYPTION_KEY": "plain-text",
    }
    main = BicepFile(INFRA / "main.bicep", overrides={"emailExtraSettings": extra})
    app = BicepFile(INFRA / "modules" / "functionapp.bicep", overrides=main.module_params("emailApp"))
    listed = app.eval(app.resource_config("app")["properties"]["siteConfig"]["appSettings"])
    settings = {entry["name"]: entry["value"] for entry in listed}
    assert settings["EMAIL_BACKFILL_DAYS"] == "14"
    assert settings["EMAIL_QUEUE_NAME"] == "email-processing"
    assert settings["AzureFunctionsJobHost__extensions__queues__batchSize"] == "1"
    assert KEY_VAULT_REFERENCE.fullmatch(settings["EMAIL_ENCRYPTION_KEY"])
