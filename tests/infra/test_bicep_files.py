"""Every Bicep file parses, modules are wired and pinned, parameters are described, outputs are UPPER_SNAKE."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.bicep import INFRA, BicepFile, parse_bicep

BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
MODULES = INFRA / "modules"

# One module per concern (CONVENTIONS.md, Bicep habit 13).
EXPECTED_MODULES = {
    "identity", "storage", "monitoring", "redis", "keyvault", "functionapp", "rbac", "alerts", "workbook",
}


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(INFRA)) for p in paths]


def test_infra_has_main_and_one_module_per_concern() -> None:
    assert (INFRA / "main.bicep").is_file()
    assert {p.stem for p in MODULES.glob("*.bicep")} == EXPECTED_MODULES


@pytest.mark.parametrize("path", BICEP_FILES, ids=_ids(BICEP_FILES))
def test_bicep_file_parses_with_pycep(path: Path) -> None:
    tree = parse_bicep(path)
    assert tree.get("resources") or tree.get("modules"), f"{path.name} declares nothing"


@pytest.mark.parametrize("path", BICEP_FILES, ids=_ids(BICEP_FILES))
def test_every_parameter_has_a_description(path: Path) -> None:
    bicep = BicepFile(path)
    undescribed = [name for name in bicep.parameters if "description" not in bicep.decorators(name)]
    assert not undescribed, f"{path.name}: parameters without @description: {undescribed}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=_ids(BICEP_FILES))
def test_modules_are_local_files_or_pinned_verified_modules(path: Path) -> None:
    for name, module in BicepFile(path).modules.items():
        detail = module["detail"]
        if module["type"] == "local":
            assert (path.parent / detail["path"]).is_file(), f"{path.name}: module {name} -> {detail['path']}"
        else:
            assert detail["full"].startswith("public:avm/"), f"{name}: only Azure Verified Modules from br/public"
            assert re.fullmatch(r"\d+\.\d+\.\d+", detail["tag"]), f"{name}: pin an exact version, not {detail['tag']}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=_ids(BICEP_FILES))
def test_loaded_text_files_exist(path: Path) -> None:
    for relative in re.findall(r"loadTextContent\('([^']+)'\)", path.read_text(encoding="utf-8")):
        assert (path.parent / relative).is_file(), f"{path.name}: loadTextContent('{relative}') is missing"


def test_main_outputs_are_upper_snake(main: BicepFile) -> None:
    assert main.outputs
    bad = [name for name in main.outputs if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name)]
    assert not bad


def test_main_deploys_every_module(main: BicepFile) -> None:
    used = {Path(m["detail"]["path"]).stem for m in main.modules.values() if m["type"] == "local"}
    assert used == EXPECTED_MODULES


def test_main_deploys_to_a_resource_group(main: BicepFile) -> None:
    # `az deployment group create` and azd with AZURE_RESOURCE_GROUP both need resource-group scope.
    assert main.tree["globals"]["scope"]["value"] == "resourceGroup"
