"""Read infra/*.bicep through pycep-parser and evaluate the parts the tests assert.

pycep gives a JSON-like tree: identifiers and string literals both arrive as plain strings, expressions as
``{"operator": ...}`` / ``{"function": ...}`` nodes and loops as ``{"loop_type": ...}``. ``evaluate`` resolves
what a test needs (parameter defaults, variables, ``union``/``concat``/``string``, ternaries, property
access, ``for`` loops) and leaves anything else as an ``Opaque`` value carrying its source text, e.g. module
outputs known only at deployment time. Ternaries whose condition is unknown and whose branches are both
objects evaluate to the union of the branches, so "is this setting ever set?" sees every branch.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycep import BicepParser

__all__ = [
    "INFRA",
    "REPO",
    "BicepFile",
    "Opaque",
    "evaluate",
    "parse_bicep",
]

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Opaque(str):
    """A value known only at deployment time; the string is a readable rendering of its expression."""


@functools.cache
def parse_bicep(path: Path) -> dict[str, Any]:
    """Parse one Bicep file (cached); raises lark errors for syntax pycep cannot read."""
    result: dict[str, Any] = BicepParser().parse(file_path=path)
    return result


@dataclass
class BicepFile:
    """One parsed Bicep file with its parameters and variables evaluated in order."""

    path: Path
    overrides: Mapping[str, Any] = field(default_factory=dict)
    tree: dict[str, Any] = field(init=False)
    env: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.tree = parse_bicep(self.path)
        self.env = {}
        for name, param in self.tree.get("parameters", {}).items():
            if name in self.overrides:
                self.env[name] = self.overrides[name]
            elif param.get("default") is not None:
                self.env[name] = evaluate(param["default"], self.env)
            else:
                self.env[name] = Opaque(name)
        for name in self.tree.get("resources", {}):
            self.env.setdefault(name, Opaque(name))
        for name in self.tree.get("modules", {}):
            self.env.setdefault(name, Opaque(name))
        for name, var in self.tree.get("variables", {}).items():
            self.env[name] = evaluate(var["value"], self.env)

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.tree.get("parameters", {}))

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.tree.get("resources", {}))

    @property
    def modules(self) -> dict[str, Any]:
        return dict(self.tree.get("modules", {}))

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self.tree.get("outputs", {}))

    def eval(self, node: Any) -> Any:
        """Evaluate an expression node of this file."""
        return evaluate(node, self.env)

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.resources.items() if r["type"] == resource_type}

    def resource_config(self, name: str) -> dict[str, Any]:
        """A resource's body, looking through a ``for`` loop to the per-item body."""
        config: dict[str, Any] = self.resources[name]["config"]
        return config["config"] if "loop_type" in config else config

    def module_params(self, name: str) -> dict[str, Any]:
        """A module call's ``params``, evaluated in this file."""
        return {key: self.eval(value) for key, value in self.modules[name]["config"]["params"].items()}

    def decorators(self, param: str) -> dict[str, Any]:
        return {d["type"]: d.get("argument") for d in self.parameters[param].get("decorators", [])}


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def _interpolate(text: str, env: Mapping[str, Any]) -> str:
    def substitute(match: re.Match[str]) -> str:
        value = env.get(match.group(1))
        if isinstance(value, (str, int)) and not isinstance(value, (bool, Opaque)):
            return str(value)
        return match.group(0)

    return _INTERPOLATION.sub(substitute, text)


def _known(*values: Any) -> bool:
    return not any(isinstance(v, Opaque) for v in values)


def evaluate(node: Any, env: Mapping[str, Any]) -> Any:  # noqa: PLR0911 - one return per expression kind
    """Evaluate a pycep expression node against ``env`` (names → values)."""
    if isinstance(node, str):
        if node in env:
            return env[node]
        return _interpolate(node, env)
    if node is None or isinstance(node, (bool, int, float)):
        return node
    if isinstance(node, list):
        return [evaluate(item, env) for item in node]
    if isinstance(node, dict):
        if set(node) == {"operator"}:
            return _operator(node["operator"], env)
        if set(node) == {"function"}:
            return _function(node["function"], env)
        if "loop_type" in node and "config" in node:
            return _loop(node, env)
        return {_unquote(key): evaluate(value, env) for key, value in node.items()}
    return Opaque(repr(node))


def _path(node: Any) -> list[Any]:
    """Flatten pycep's nested property_accessor operands: a.b.c → [a, "b", "c"]."""
    if isinstance(node, dict) and set(node) == {"operator"} and node["operator"]["type"] == "property_accessor":
        operands = node["operator"]["operands"]
        return [operands["operand_1"], *_path(operands["operand_2"])]
    return [node]


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "equals": operator.eq,
    "not_equals": operator.ne,
    "greater_than": operator.gt,
    "greater_than_or_equals": operator.ge,
    "less_than": operator.lt,
    "less_than_or_equals": operator.le,
    "add": operator.add,
}


def _operator(op: dict[str, Any], env: Mapping[str, Any]) -> Any:  # noqa: PLR0911 - one return per expression kind
    kind, operands = op["type"], op.get("operands", {})
    if kind == "property_accessor":
        base, *keys = _path({"operator": op})
        value = evaluate(base, env)
        for key in keys:
            if isinstance(value, Mapping) and key in value:
                value = value[key]
            else:
                return Opaque(".".join(str(part) for part in [value, key]))
        return value
    if kind == "conditional":
        condition = evaluate(operands["condition"], env)
        when_true = evaluate(operands["true_value"], env)
        when_false = evaluate(operands["false_value"], env)
        if isinstance(condition, bool):
            return when_true if condition else when_false
        if isinstance(when_true, dict) and isinstance(when_false, dict):
            return {**when_false, **when_true}
        return Opaque(f"{condition} ? ... : ...")
    values = [evaluate(v, env) for v in operands.values()]
    if kind == "not" and _known(*values):
        return not values[0]
    compute = _BINARY.get(kind)
    if compute is not None and len(values) == 2 and _known(*values):
        try:
            return compute(values[0], values[1])
        except TypeError:
            pass
    return Opaque(f"{kind}({', '.join(map(str, values))})")


def _function(fn: dict[str, Any], env: Mapping[str, Any]) -> Any:  # noqa: PLR0911 - one return per expression kind
    kind = fn["type"]
    args = [evaluate(v, env) for v in (fn.get("parameters") or {}).values()]
    if kind == "union" and all(isinstance(a, dict) for a in args):
        merged: dict[str, Any] = {}
        for arg in args:
            merged.update(arg)
        return merged
    if kind == "concat" and all(isinstance(a, list) for a in args):
        return [item for arg in args for item in arg]
    if kind == "flatten" and isinstance(args[0], list) and all(isinstance(a, list) for a in args[0]):
        return [item for arg in args[0] for item in arg]
    if kind == "string" and _known(args[0]) and isinstance(args[0], (int, str)):
        return str(args[0])
    if kind == "items" and isinstance(args[0], dict):
        return [{"key": k, "value": v} for k, v in args[0].items()]
    if kind == "empty" and _known(args[0]) and isinstance(args[0], (str, list, dict)):
        return len(args[0]) == 0
    if kind == "load_text_content":
        return Opaque(f"loadTextContent({args[0]})")
    return Opaque(f"{kind}(...)")


def _loop(node: dict[str, Any], env: Mapping[str, Any]) -> Any:
    loop = node["loop_type"]
    detail = loop["detail"]
    array = evaluate(detail["array_name"], env)
    if not isinstance(array, list):
        return Opaque(f"for {detail['item_name']} in {array}")
    results = []
    for index, item in enumerate(array):
        scope = {**env, detail["item_name"]: item}
        if "index_name" in detail:
            scope[detail["index_name"]] = index
        results.append(evaluate(node["config"], scope))
    return results
