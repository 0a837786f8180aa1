"""Fixtures for the local host's tests: the test app, a clean probe, and per-test queue names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.devhost.probe import PROBE, Probe

APP_ROOT = Path(__file__).parent / "app"


@pytest.fixture
def probe() -> Iterator[Probe]:
    """The test app's invocation record, empty at the start of the test."""
    PROBE.reset()
    yield PROBE
    PROBE.reset()


@pytest.fixture
def queue_names() -> dict[str, str]:
    """Fresh queue names for the test app's ``%WORK_QUEUE%`` and ``%OTHER_QUEUE%`` settings."""
    suffix = uuid.uuid4().hex[:10]
    return {"WORK_QUEUE": f"dh-work-{suffix}", "OTHER_QUEUE": f"dh-other-{suffix}", "TICK_SCHEDULE": "*/1 * * * * *"}
