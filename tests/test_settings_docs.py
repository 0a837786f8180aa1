"""The settings documentation stays true: local.settings.json.example and the README table list every setting."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "local.settings.json.example"
README = ROOT / "README.md"
LOCAL_ONLY = {"FUNCTIONS_WORKER_RUNTIME", "DEVHOST_FUNCTION_KEY", "DEVHOST_MASTER_KEY"}
_ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| (?P<default>[^|]*) \| (?P<what>[^|]+) \| (?P<needed>[^|]+) \| "
                  r"(?P<secret>yes|no) \|$")


def _aliases() -> dict[str, Any]:
    return {field.alias: field for field in Settings.model_fields.values() if field.alias}


def _example() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return document


def _readme_rows() -> dict[str, dict[str, str]]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| Setting | Default |")), None)
    assert start is not None, "README.md has no settings table (header '| Setting | Default | ...')"
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        match = _ROW.match(line)
        assert match is not None, f"README settings row is malformed: {line}"
        assert match["name"] not in rows, f"README lists {match['name']} twice"
        rows[match["name"]] = {key: value.strip() for key, value in match.groupdict().items()}
    return rows


def _is_secret(annotation: Any) -> bool:
    return SecretStr in typing.get_args(annotation) or annotation is SecretStr or any(
        _is_secret(arg) for arg in typing.get_args(annotation))


def test_example_is_plain_and_every_value_is_a_string() -> None:
    document = _example()
    assert document["IsEncrypted"] is False
    values = document["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert all(isinstance(value, str) for value in values.values()), "Core Tools accepts string values only"


def test_example_lists_every_setting_and_nothing_unknown() -> None:
    values = _example()["Values"]
    assert sorted(set(_aliases()) - set(values)) == []
    assert sorted(set(values) - set(_aliases()) - LOCAL_ONLY) == []


def test_example_values_validate_as_settings() -> None:
    settings = Settings.from_env(_example()["Values"])
    assert settings.store_backend == "postgres"
    for name in ("REDIS_URL", "EMAIL_ENCRYPTION_KEY", "EXOTEL_SID", "EXOTEL_API_KEY", "EXOTEL_TOKEN",
                 "EXOTEL_WHATSAPP_NUMBER", "OPENAI_API_KEY"):
        settings.require(name)  # what a local run of each worker needs is filled in


def test_example_storage_points_at_the_local_azurite_ports_explicitly() -> None:
    # UseDevelopmentStorage=true only works on Azurite's default ports; ours are 10100-10102.
    storage = _example()["Values"]["AzureWebJobsStorage"]
    assert "UseDevelopmentStorage" not in storage
    for service, port in (("Blob", 10100), ("Queue", 10101), ("Table", 10102)):
        assert f"{service}Endpoint=http://127.0.0.1:{port}/devstoreaccount1" in storage


def test_example_secrets_are_obvious_local_placeholders() -> None:
    values = _example()["Values"]
    for name, field in _aliases().items():
        value = values[name]
        if _is_secret(field.annotation) and value and name not in ("AzureWebJobsStorage", "REDIS_URL",
                                                                   "DATABASE_URL"):
            assert "local" in value, f"{name} should be an obviously local-only placeholder"


def test_readme_table_lists_every_setting_once_and_nothing_unknown() -> None:
    rows = _readme_rows()
    assert sorted(set(_aliases()) - set(rows)) == []
    assert sorted(set(rows) - set(_aliases())) == []


def _documented_default(cell: str) -> str | None:
    if cell.startswith("—"):
        return None
    # `value`, optionally followed by a note in parentheses, e.g. that the host needs the setting set.
    match = re.fullmatch(r"`([^`]*)`(?: \([^`]*\))?", cell)
    assert match is not None, f"default cell {cell!r} must be `value` (optionally with a note) or start with —"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(_aliases()))
def test_readme_default_and_secret_columns_match_the_settings_model(name: str) -> None:
    row = _readme_rows()[name]
    field = _aliases()[name]
    documented = _documented_default(row["default"])
    actual = field.default
    if actual in (None, ""):
        assert documented is None, f"{name} has no default; the README says {documented!r}"
    elif isinstance(actual, int | float):
        assert documented is not None, f"{name}: default is {actual}"
        assert float(documented) == float(actual), f"{name}: default is {actual}"
    else:
        assert documented == actual, f"{name}: default is {actual!r}"
    assert (row["secret"] == "yes") == _is_secret(field.annotation), f"{name}: secret column is wrong"
