"""Fixtures for the infrastructure tests: main.bicep and the three function-app module instances, evaluated."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.bicep import INFRA, BicepFile, Opaque

APPS = {"email": "emailApp", "whatsapp": "whatsappApp", "transcription": "transcriptionApp"}

# Parameters whose value picks between settings (database backend, legacy key); left unknown, both branches
# are evaluated, so every setting Bicep can set is visible.
_BRANCHING_PARAMS = ("storeBackend", "useLegacyEmailKey")


def _app_module(main: BicepFile, module: str) -> BicepFile:
    return BicepFile(INFRA / "modules" / "functionapp.bicep", overrides=main.module_params(module))


def _settings(app: BicepFile) -> dict[str, Any]:
    site = app.resource_config("app")
    listed = app.eval(site["properties"]["siteConfig"]["appSettings"])
    assert isinstance(listed, list), f"appSettings did not evaluate to a list: {listed!r}"
    names = [entry["name"] for entry in listed]
    assert len(names) == len(set(names)), f"duplicate app settings: {sorted(names)}"
    return {entry["name"]: entry["value"] for entry in listed}


@pytest.fixture(scope="session")
def main() -> BicepFile:
    """infra/main.bicep with every parameter at its default."""
    return BicepFile(INFRA / "main.bicep")


@pytest.fixture(scope="session")
def main_all_branches() -> BicepFile:
    """infra/main.bicep with the branching parameters unknown, so every settings branch is evaluated."""
    return BicepFile(INFRA / "main.bicep", overrides={name: Opaque(name) for name in _BRANCHING_PARAMS})


@pytest.fixture(scope="session")
def apps(main: BicepFile) -> dict[str, BicepFile]:
    """The function-app module as each of the three apps instantiates it (defaults)."""
    return {app: _app_module(main, module) for app, module in APPS.items()}


@pytest.fixture(scope="session")
def app_settings(main: BicepFile) -> dict[str, dict[str, Any]]:
    """Effective app settings per app, with the default parameters."""
    return {app: _settings(_app_module(main, module)) for app, module in APPS.items()}


@pytest.fixture(scope="session")
def app_settings_all_branches(main_all_branches: BicepFile) -> dict[str, dict[str, Any]]:
    """Effective app settings per app, over every branch of the branching parameters."""
    return {app: _settings(_app_module(main_all_branches, module)) for app, module in APPS.items()}
