"""Index a Python v2 Functions app the way the Python worker does.

The worker imports the script file (``PYTHON_SCRIPT_FILE_NAME``, default ``function_app.py``) from the
script root, requires exactly one top-level ``FunctionRegister`` (``func.FunctionApp``), calls
``app.get_functions()`` and sends each function's ``get_raw_bindings()`` to the host. It also checks that
every binding name is a parameter of the Python function. We keep the raw bindings and the user function.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from azure.functions.decorators.function_app import FunctionRegister

__all__ = ["FunctionSpec", "IndexError_", "index_app", "load_app_module"]


class IndexError_(RuntimeError):  # noqa: N801 - trailing underscore: IndexError is a builtin
    """The app cannot be indexed (no app, two apps, a binding without a parameter ...)."""


@dataclass(frozen=True)
class FunctionSpec:
    """One indexed function: its name, trigger binding, other bindings and the Python callable."""

    name: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]] = field(default_factory=list)
    func: Any = None
    is_async: bool = False
    wants_context: bool = False

    @property
    def trigger_type(self) -> str:
        """``queueTrigger``, ``timerTrigger``, ``httpTrigger`` ..."""
        return str(self.trigger["type"])

    def output_bindings(self) -> list[dict[str, Any]]:
        """Bindings with direction OUT other than ``$return``."""
        return [b for b in self.bindings if b.get("direction", "").upper() == "OUT" and b["name"] != "$return"]


def load_app_module(script_root: Path, script_file: str = "function_app.py") -> ModuleType:
    """Import ``script_root/script_file`` with ``script_root`` first on ``sys.path``, as the worker does.

    An already-imported module from the same file is reused; a different file with the same module name is
    loaded under a unique name, so several apps can be hosted in one test process.
    """
    path = (script_root / script_file).resolve()
    if not path.exists():
        raise IndexError_(f"script file not found: {path}")
    root = str(script_root.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path:
        return existing
    if existing is not None:
        name = f"devhost_app_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise IndexError_(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _find_app(module: ModuleType) -> FunctionRegister:
    apps = [value for value in vars(module).values() if isinstance(value, FunctionRegister)]
    if not apps:
        raise IndexError_(f"Could not find top level function app instances in {module.__file__}")
    if len(apps) > 1:
        raise IndexError_(f"More than one FunctionApp or Blueprint instance found in {module.__file__}")
    return apps[0]


def _check_parameters(name: str, func: Any, bindings: list[dict[str, Any]]) -> bool:
    parameters = inspect.signature(func).parameters
    names = {b["name"] for b in bindings if b["name"] != "$return"}
    missing = names - set(parameters)
    if missing:
        raise IndexError_(f"Function {name}: bindings {sorted(missing)} have no matching parameter")
    extra = set(parameters) - names - {"context"}
    if extra:
        raise IndexError_(f"Function {name}: parameters {sorted(extra)} have no matching binding")
    return "context" in parameters


_INDEXED: dict[int, tuple[FunctionRegister, list[FunctionSpec]]] = {}


def index_app(module: ModuleType) -> list[FunctionSpec]:
    """Every function of the module's single FunctionApp, with raw bindings parsed from JSON.

    ``get_functions()`` works once per app object (a second call reports duplicate names), as the worker
    calls it once per process; the result is cached so one process can host the same app several times.
    """
    app = _find_app(module)
    cached = _INDEXED.get(id(app))
    if cached is not None and cached[0] is app:
        return list(cached[1])
    specs = []
    # Another indexer in this process (a test) may have called get_functions() already: forget its record.
    app.functions_bindings = {}
    for function in app.get_functions():
        name = str(function.get_function_name())
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        if len(triggers) != 1:
            raise IndexError_(f"Function {name}: expected exactly one trigger, found {len(triggers)}")
        user_function = function.get_user_function()
        specs.append(
            FunctionSpec(
                name=name,
                trigger=triggers[0],
                bindings=bindings,
                func=user_function,
                is_async=inspect.iscoroutinefunction(user_function),
                wants_context=_check_parameters(name, user_function, bindings),
            )
        )
    _INDEXED[id(app)] = (app, specs)
    return list(specs)
