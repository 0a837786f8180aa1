"""App settings as the host sees them: ``local.settings.json`` ``Values`` merged into the environment.

Core Tools (``func start``) copies each ``Values`` entry into the process environment unless a variable of
that name is already set to a non-empty value ("Skipping '<name>' from local settings as it's already
defined in current environment variables."). We do the same, so one ``local.settings.json`` works with both.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

__all__ = [
    "SettingError",
    "apply_local_settings",
    "is_function_disabled",
    "load_local_settings",
    "resolve_expression",
]

logger = logging.getLogger(__name__)

_EXPRESSION = re.compile(r"%([^%]+)%")


class SettingError(RuntimeError):
    """A binding names an app setting that is not set, or local.settings.json is unusable."""


def load_local_settings(path: Path) -> dict[str, str]:
    """The ``Values`` of a local.settings.json file as strings; ``{}`` if the file does not exist.

    Raises ``SettingError`` if the file is not valid JSON, is encrypted, or ``Values`` is not an object.
    """
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SettingError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if document.get("IsEncrypted"):
        raise SettingError(f"{path} is encrypted (IsEncrypted: true); the local host reads plain values only")
    values = document.get("Values", {})
    if not isinstance(values, dict):
        raise SettingError(f"{path}: Values must be an object")
    return {str(key): "" if value is None else str(value) for key, value in values.items()}


def apply_local_settings(values: Mapping[str, str], environ: MutableMapping[str, str]) -> list[str]:
    """Copy ``values`` into ``environ`` unless already set non-empty there; return the names skipped."""
    skipped = []
    for name, value in values.items():
        if environ.get(name):
            skipped.append(name)
            logger.warning(
                "Skipping '%s' from local settings as it's already defined in current environment variables.",
                name,
            )
        else:
            environ[name] = value
    return skipped


def resolve_expression(value: str, function_name: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace every ``%NAME%`` in a binding value with the app setting's value.

    Raises ``SettingError`` (naming the function and the setting, as the host's indexing error does) when a
    setting is missing or empty.
    """
    source = os.environ if environ is None else environ

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = source.get(name, "")
        if not resolved:
            raise SettingError(
                f"Error indexing method 'Functions.{function_name}': '%{name}%' does not resolve to a value."
            )
        return resolved

    return _EXPRESSION.sub(lookup, value)


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true")


def is_function_disabled(function_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``AzureWebJobs.<name>.Disabled`` (or the Linux form ``AzureWebJobs_<name>_Disabled``) is true.

    These are the two names the WebJobs SDK checks (``FunctionIndexer.IsDisabled``), each accepting ``true``
    or ``1`` case-insensitively. ``AzureWebJobs__<name>__Disabled`` is *not* read by the host (it becomes the
    configuration key ``AzureWebJobs:<name>:Disabled``); we warn if it is set so nobody relies on it.
    """
    source = os.environ if environ is None else environ
    if _is_true(source.get(f"AzureWebJobs__{function_name}__Disabled")):
        logger.warning(
            "AzureWebJobs__%s__Disabled is set but the Functions host ignores that form; use "
            "AzureWebJobs.%s.Disabled or AzureWebJobs_%s_Disabled",
            function_name,
            function_name,
            function_name,
        )
    return _is_true(source.get(f"AzureWebJobs.{function_name}.Disabled")) or _is_true(
        source.get(f"AzureWebJobs_{function_name}_Disabled")
    )
