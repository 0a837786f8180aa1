"""host.json settings the local host honours, with app-setting overrides as the host applies them.

The host reads ``AzureFunctionsJobHost__<path>__<to>__<setting>`` app settings over host.json (``__`` for
``.``, case-insensitive keys), e.g. ``AzureFunctionsJobHost__extensions__queues__batchSize=1``. Defaults are
``QueuesOptions``' (azure-sdk-for-net), with the development-time ``maxPollingInterval`` of 2 s.

Local only, the project's concurrency settings set the queue concurrency of one worker's queue functions
(``WORKER_QUEUE_FUNCTIONS``); in Azure infra/ turns them into the overrides above, per app. Precedence for a
queue function, highest first:

1. ``AzureFunctionsJobHost__extensions__queues__batchSize`` / ``__newBatchThreshold`` (either one set
   non-empty): host.json plus these overrides, for every queue function, as in Azure; the variables below
   are then ignored (logged).
2. ``<WORKER>_WORKER_CONCURRENCY`` (``EMAIL_``, ``WHATSAPP_``, ``TRANSCRIPTION_``) for that worker's functions.
3. ``WORKER_CONCURRENCY`` for every worker's functions.
4. host.json ``extensions.queues``.

A concurrency N from 2. or 3. becomes ``batchSize = ceil(N / 2)`` and ``newBatchThreshold = floor(N / 2)``, so
at most N messages of that function run at once on this host.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "WORKER_QUEUE_FUNCTIONS",
    "HostConfig",
    "HostConfigError",
    "QueueOptions",
    "load_host_config",
    "parse_timespan_s",
    "worker_concurrency",
]

logger = logging.getLogger(__name__)

_OVERRIDE_PREFIX = "azurefunctionsjobhost__"
_QUEUE_OVERRIDES = (
    f"{_OVERRIDE_PREFIX}extensions__queues__batchsize",
    f"{_OVERRIDE_PREFIX}extensions__queues__newbatchthreshold",
)
# The queue-triggered functions of each worker of function_app.py (infra/main.bicep's workerFunctions).
WORKER_QUEUE_FUNCTIONS: Mapping[str, tuple[str, ...]] = {
    "email": ("email_poll_inbox",),
    "whatsapp": ("whatsapp_send", "whatsapp_send_priority"),
    "transcription": ("transcribe_recording",),
}
_MAX_WORKER_CONCURRENCY = 64  # shared/settings.py's Concurrency bound
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
    """The parts of host.json the local host uses; ``function_queues`` are per-function queue options."""

    queues: QueueOptions
    route_prefix: str = "api"
    function_timeout_s: float | None = None
    function_queues: Mapping[str, QueueOptions] = field(default_factory=dict)

    def queues_for(self, function_name: str) -> QueueOptions:
        """The queue options of one queue-triggered function: its worker's concurrency, else ``queues``."""
        return self.function_queues.get(function_name, self.queues)


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


def _concurrency(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise HostConfigError(f"{name}: {raw!r} is not an integer") from None
    if not 1 <= value <= _MAX_WORKER_CONCURRENCY:
        raise HostConfigError(f"{name}: {value} is outside 1..{_MAX_WORKER_CONCURRENCY}")
    return value


def worker_concurrency(environ: Mapping[str, str]) -> dict[str, int]:
    """Concurrency per worker from ``<WORKER>_WORKER_CONCURRENCY``, else ``WORKER_CONCURRENCY``; unset: absent.

    Raises ``HostConfigError`` naming the variable when a value is not an integer in 1..64.
    """
    fallback = _concurrency(environ, "WORKER_CONCURRENCY")
    found = {}
    for worker in WORKER_QUEUE_FUNCTIONS:
        value = _concurrency(environ, f"{worker.upper()}_WORKER_CONCURRENCY") or fallback
        if value is not None:
            found[worker] = value
    return found


def _function_queues(queues: QueueOptions, environ: Mapping[str, str]) -> dict[str, QueueOptions]:
    by_worker = worker_concurrency(environ)
    if not by_worker:
        return {}
    explicit = [name for name, value in environ.items() if name.lower() in _QUEUE_OVERRIDES and value.strip()]
    if explicit:
        logger.info(
            "%s set: it applies to every queue function; the *_WORKER_CONCURRENCY settings are ignored",
            " and ".join(sorted(explicit)),
        )
        return {}
    per_function = {}
    for worker, total in by_worker.items():
        options = replace(queues, batch_size=(total + 1) // 2, new_batch_threshold=total // 2)
        for function_name in WORKER_QUEUE_FUNCTIONS[worker]:
            per_function[function_name] = options
    return per_function


def load_host_config(path: Path, environ: Mapping[str, str] | None = None) -> HostConfig:
    """Read host.json (``{}`` if missing) and apply ``AzureFunctionsJobHost__*`` overrides from ``environ``,
    then the workers' concurrency settings (precedence in the module docstring).

    Raises ``HostConfigError`` for values the host would reject (e.g. ``batchSize`` above 32) and for
    concurrency settings that are not integers in 1..64.
    """
    environ = os.environ if environ is None else environ
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    _merge_overrides(document, environ)
    extensions = _get(document, "extensions") or {}
    queues = _get(extensions, "queues") or {}
    http = _get(extensions, "http") or {}
    prefix = _get(http, "routePrefix")
    timeout = _get(document, "functionTimeout")
    queue_options = _queue_options(queues)
    return HostConfig(
        queues=queue_options,
        route_prefix="api" if prefix is None else str(prefix).strip("/"),
        function_timeout_s=None if timeout in (None, "-1") else parse_timespan_s(timeout, "functionTimeout"),
        function_queues=_function_queues(queue_options, environ),
    )
