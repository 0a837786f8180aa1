"""Turn the deployment's UPPER_SNAKE outputs into a ``local.settings.json`` for running against Azure.

Input is either the ARM outputs of ``infra/main.bicep``::

    az deployment group show -g RG -n main --query properties.outputs > outputs.json
    .venv/bin/python scripts/settings_from_deployment.py --outputs outputs.json

or azd's environment (``azd env get-values`` prints ``NAME="value"`` lines)::

    azd env get-values | .venv/bin/python scripts/settings_from_deployment.py --azd-env -

The file it writes mirrors one app (``--worker``; default ``all`` runs every worker) with identity-based
storage (your ``az login`` identity; it needs the data roles rbac.bicep grants to ``developerPrincipalId``).
Secrets are never written: they live in Key Vault, and the script prints the commands that read them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SECRET_SETTINGS",
    "WORKER_FUNCTIONS",
    "build_local_settings",
    "main",
    "parse_arm_outputs",
    "parse_azd_env",
]

#: Deployment output → app setting, where the names differ.
_RENAMED = {
    "AZURE_STORAGE_BLOB_ENDPOINT": "AzureWebJobsStorage__blobServiceUri",
    "AZURE_STORAGE_QUEUE_ENDPOINT": "AzureWebJobsStorage__queueServiceUri",
    "AZURE_STORAGE_TABLE_ENDPOINT": "AzureWebJobsStorage__tableServiceUri",
}

#: Outputs that are app settings under the same name.
_SAME_NAME = (
    "EMAIL_QUEUE_NAME",
    "WHATSAPP_QUEUE_NAME",
    "WHATSAPP_PRIORITY_QUEUE_NAME",
    "TRANSCRIPTION_QUEUE_NAME",
    "EMAIL_POLL_SCHEDULE",
    "EMAIL_POLL_INTERVAL",
    "EMAIL_WORKER_CONCURRENCY",
    "WHATSAPP_WORKER_CONCURRENCY",
    "TRANSCRIPTION_WORKER_CONCURRENCY",
    "EMAIL_ATTACHMENTS_CONTAINER",
    "DATABASE_POOL_MAX_SIZE",
    "SUPABASE_URL",
    "EXOTEL_SID",
    "EXOTEL_API_URL",
    "EXOTEL_WHATSAPP_NUMBER",
    "EXOTEL_STATUS_CALLBACK_URL",
    "OPENAI_BASE_URL",
)

#: Outputs that describe the deployment rather than configure the code.
IGNORED_OUTPUTS = frozenset({
    "AZURE_LOCATION",
    "AZURE_RESOURCE_GROUP",
    "AZURE_CLIENT_ID",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_KEY_VAULT_URI",
    "REDIS_HOST_NAME",
    "REDIS_PORT",
    # Local runs don't send telemetry to the deployed component (it accepts Entra-authenticated data only).
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "EMAIL_FUNCTION_APP_NAME",
    "WHATSAPP_FUNCTION_APP_NAME",
    "TRANSCRIPTION_FUNCTION_APP_NAME",
    "AZURE_KEY_VAULT_NAME",
    "STORE_BACKEND",
})

#: Secret settings and the Key Vault secret each one references in Azure.
SECRET_SETTINGS: dict[str, str] = {
    "REDIS_URL": "redis-url",
    "DATABASE_URL": "database-url",
    "SUPABASE_SERVICE_ROLE_KEY": "supabase-service-role-key",
    "EXOTEL_API_KEY": "exotel-api-key",
    "EXOTEL_TOKEN": "exotel-token",
    "EXOTEL_CALLBACK_SECRET": "exotel-callback-secret",
    "OPENAI_API_KEY": "openai-api-key",
    "EMAIL_ENCRYPTION_KEY": "email-encryption-key",
    "EMAIL_LEGACY_ENCRYPTION_KEY": "email-legacy-encryption-key",
}

#: Worker functions per app; must equal ``workerFunctions`` in infra/main.bicep (a test checks).
WORKER_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "email": ("email_schedule_polls", "email_poll_inbox"),
    "whatsapp": ("whatsapp_send", "whatsapp_send_priority", "whatsapp_status_callback"),
    "transcription": ("transcribe_recording",),
}


def parse_arm_outputs(data: Mapping[str, Any]) -> dict[str, str]:
    """Flatten ARM outputs (``{"NAME": {"type": "String", "value": ...}}``) to ``{"NAME": "value"}``."""
    flat: dict[str, str] = {}
    for name, entry in data.items():
        value = entry.get("value") if isinstance(entry, Mapping) else entry
        flat[name.upper()] = "" if value is None else str(value)
    return flat


def parse_azd_env(text: str) -> dict[str, str]:
    """Parse ``azd env get-values`` output: ``NAME="value"`` lines, shell-quoted."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        name, _, raw = stripped.partition("=")
        parts = shlex.split(raw, posix=True) if raw else [""]
        values[name.strip()] = parts[0] if parts else ""
    return values


def build_local_settings(outputs: Mapping[str, str], *, worker: str = "all") -> dict[str, Any]:
    """The ``local.settings.json`` document for ``worker`` (``email``, ``whatsapp``, ``transcription``, ``all``).

    Raises ``KeyError`` for an unknown worker and ``ValueError`` when the storage endpoints are missing.
    """
    if worker != "all" and worker not in WORKER_FUNCTIONS:
        raise KeyError(f"unknown worker {worker!r}; choose from {', '.join(WORKER_FUNCTIONS)} or all")
    missing = [name for name in _RENAMED if not outputs.get(name)]
    if missing:
        raise ValueError(f"deployment outputs lack {', '.join(missing)}: is this the output of infra/main.bicep?")
    values: dict[str, str] = {"FUNCTIONS_WORKER_RUNTIME": "python"}
    for output, setting in _RENAMED.items():
        values[setting] = outputs[output]
    for name in _SAME_NAME:
        if outputs.get(name):
            values[name] = outputs[name]
    if worker != "all":
        for other, functions in WORKER_FUNCTIONS.items():
            if other != worker:
                values.update({f"AzureWebJobs.{name}.Disabled": "true" for name in functions})
    return {"IsEncrypted": False, "Values": values}


def _secret_hints(outputs: Mapping[str, str]) -> list[str]:
    vault = outputs.get("AZURE_KEY_VAULT_NAME", "<vault>")
    return [
        f"  {setting}: az keyvault secret show --vault-name {vault} --name {secret} --query value -o tsv"
        for setting, secret in SECRET_SETTINGS.items()
    ]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--outputs", type=Path, help="JSON of the deployment's outputs (az deployment ... show)")
    source.add_argument("--azd-env", help="file with `azd env get-values` output, or - for stdin")
    parser.add_argument("--worker", default="all", choices=[*WORKER_FUNCTIONS, "all"])
    parser.add_argument("-o", "--output", type=Path, default=Path("local.settings.json"))
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)

    if args.outputs is not None:
        outputs = parse_arm_outputs(json.loads(args.outputs.read_text(encoding="utf-8")))
    else:
        text = sys.stdin.read() if args.azd_env == "-" else Path(args.azd_env).read_text(encoding="utf-8")
        outputs = parse_azd_env(text)
    if args.output.exists() and not args.force:
        print(f"{args.output} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    try:
        document = build_local_settings(outputs, worker=args.worker)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output} ({len(document['Values'])} settings, worker={args.worker}).", file=sys.stderr)
    print("Secrets are not written. Add the ones this worker needs from Key Vault:", file=sys.stderr)
    print("\n".join(_secret_hints(outputs)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
