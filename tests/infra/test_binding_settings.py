"""Binding expressions: every %SETTING% a function's bindings name is set in every app.

function_app.py registers every blueprint in every app and each app disables the other workers' functions.
The host still indexes disabled functions and resolves their %SETTING% expressions (queue names, the poll
schedule) while doing so; a setting missing in one app fails that app's indexing.
"""

from __future__ import annotations

import json
import re
from typing import Any

import function_app
from tests.infra.bicep import BicepFile

_EXPRESSION = re.compile(r"%([^%]+)%")


def _binding_settings() -> dict[str, set[str]]:
    """Setting name -> the functions whose raw bindings name it."""
    app = function_app.app
    app.functions_bindings = {}  # get_functions() records names and refuses a second call otherwise
    found: dict[str, set[str]] = {}
    for function in app.get_functions():
        for raw in function.get_raw_bindings():
            for value in json.loads(raw).values():
                if isinstance(value, str):
                    for name in _EXPRESSION.findall(value):
                        found.setdefault(name, set()).add(function.get_function_name())
    return found


def test_bindings_name_the_expected_settings() -> None:
    # A guard on the scan itself: it must see the settings the blueprints are known to use.
    assert set(_binding_settings()) >= {
        "EMAIL_QUEUE_NAME", "WHATSAPP_QUEUE_NAME", "WHATSAPP_PRIORITY_QUEUE_NAME", "TRANSCRIPTION_QUEUE_NAME",
        "EMAIL_POLL_SCHEDULE",
    }


def test_every_binding_setting_is_set_in_every_app(app_settings_all_branches: dict[str, dict[str, Any]]) -> None:
    used = _binding_settings()
    for app, settings in app_settings_all_branches.items():
        missing = {name: sorted(functions) for name, functions in used.items() if not settings.get(name)}
        assert not missing, f"{app} lacks settings its (possibly disabled) functions' bindings name: {missing}"


def test_binding_settings_are_in_the_settings_common_to_all_apps(main_all_branches: BicepFile) -> None:
    common = main_all_branches.env["commonSettings"]
    assert set(_binding_settings()) <= set(common)
