"""host.json settings the local host honours, with app-setting overrides as the host applies them.

The host reads ``AzureFunctionsJobHost__<path>__<to>__<setting>`` app settings over host.json (``__`` for
``.``, case-insensitive keys), e.g. ``AzureFunctionsJobHost__extensions__queues__batchSize=1``. Defaults are
``QueuesOptions``' (azure-sdk-for-net), with the development-time ``maxPollingInterval`` of 2 s.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HostConfig", "HostConfigError", "QueueOptions", "load_host_config", "parse_timespan_s"]

_OVERRIDE_PREFIX = "azurefunctionsjobhost__"
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")
_MAX_BATCH_SIZE = 32


class HostConfigError(ValueError):
    """host.json or one of its overrides has a value the host would reject."""


def parse_timespan_s(value: Any, name: str) -> float:
    """Seconds in a .NET TimeSpan string (``[d.]hh:mm:ss[.fffffff]``). Raises ``HostConfigError``."""
    match = _TIMESPAN.match(str(value).strip())
    if not match:
        raise HostConfigError(f"{name}: {value!r} is not a TimeSpan (hh:mm:ss)")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` of host.json. Per-function concurrency is ``batch_size + new_batch_threshold``."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout_s: float = 0.0
    max_polling_interval_s: float = 2.0
    message_encoding: str = "base64"

    @property
    def concurrency(self) -> int:
        """Most messages one queue-triggered function processes at once on this instance."""
        return self.batch_size + self.new_batch_threshold


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json the local host uses."""

    queues: QueueOptions
    route_prefix: str = "api"
    function_timeout_s: float | None = None


def _merge_overrides(document: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.lower().startswith(_OVERRIDE_PREFIX):
            continue
        path = name[len(_OVERRIDE_PREFIX) :].split("__")
        node = document
        for part in path[:-1]:
            key = next((k for k in node if k.lower() == part.lower()), part)
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        leaf = next((k for k in node if k.lower() == path[-1].lower()), path[-1])
        node[leaf] = value


def _get(section: Mapping[str, Any], name: str) -> Any:
    return next((v for k, v in section.items() if k.lower() == name.lower()), None)


def _int(section: Mapping[str, Any], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = _get(section, name)
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise HostConfigError(f"extensions.queues.{name}: {raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise HostConfigError(f"extensions.queues.{name}: {value} is outside {minimum}..{maximum}")
    return value


def _queue_options(section: Mapping[str, Any]) -> QueueOptions:
    batch_size = _int(section, "batchSize", 16, 1, _MAX_BATCH_SIZE)
    # QueuesOptions: (batchSize / 2) * processorCount when unset; processorCount is 1 only on "Dynamic".
    default_threshold = (batch_size // 2) * (os.cpu_count() or 1)
    visibility = _get(section, "visibilityTimeout")
    polling = _get(section, "maxPollingInterval")
    encoding = str(_get(section, "messageEncoding") or "base64").strip().lower()
    if encoding not in ("base64", "none"):
        raise HostConfigError(f"extensions.queues.messageEncoding: {encoding!r} is not base64 or none")
    options = QueueOptions(
        batch_size=batch_size,
        new_batch_threshold=_int(section, "newBatchThreshold", default_threshold, 0, 10_000),
        max_dequeue_count=_int(section, "maxDequeueCount", 5, 1, 10_000),
        visibility_timeout_s=0.0 if visibility is None else parse_timespan_s(visibility, "visibilityTimeout"),
        max_polling_interval_s=2.0 if polling is None else parse_timespan_s(polling, "maxPollingInterval"),
        message_encoding=encoding,
    )
    if options.max_polling_interval_s < 0.1:
        raise HostConfigError("extensions.queues.maxPollingInterval must be at least 00:00:00.1")
    return options


def load_host_config(path: Path, environ: Mapping[str, str] | None = None) -> HostConfig:
    """Read host.json (``{}`` if missing) and apply ``AzureFunctionsJobHost__*`` overrides from ``environ``.

    Raises ``HostConfigError`` for values the host would reject (e.g. ``batchSize`` above 32).
    """
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    _merge_overrides(document, os.environ if environ is None else environ)
    extensions = _get(document, "extensions") or {}
    queues = _get(extensions, "queues") or {}
    http = _get(extensions, "http") or {}
    prefix = _get(http, "routePrefix")
    timeout = _get(document, "functionTimeout")
    return HostConfig(
        queues=_queue_options(queues),
        route_prefix="api" if prefix is None else str(prefix).strip("/"),
        function_timeout_s=None if timeout in (None, "-1") else parse_timespan_s(timeout, "functionTimeout"),
    )
