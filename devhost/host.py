"""The local host: settings, indexing, and the queue / timer / HTTP listeners, started and stopped together."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sys
import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.functions.queue import QueueMessage
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from devhost.appsettings import (
    SettingError,
    apply_local_settings,
    is_function_disabled,
    load_local_settings,
    resolve_expression,
)
from devhost.hostconfig import HostConfig, load_host_config
from devhost.index import FunctionSpec, index_app, load_app_module
from devhost.invoker import Invoker
from devhost.ncrontab import CrontabError, parse_schedule
from devhost.queues import DEFAULT_LEASE_S, QueueListener
from devhost.timers import ScheduleMonitor, TimerListener
from devhost.webserver import FUNCTION_KEY_SETTING, MASTER_KEY_SETTING, HttpRoute, LocalHttpServer, compile_route

__all__ = ["HostOptions", "LocalHost"]

logger = logging.getLogger(__name__)

_UNSET = object()


@dataclass
class HostOptions:
    """How to run the local host. ``settings`` act like environment variables set before start."""

    script_root: Path = field(default_factory=Path.cwd)
    settings_file: Path | None = None  # default: <script_root>/local.settings.json
    functions: list[str] | None = None  # None: every function
    settings: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 7071  # 0: any free port
    grace_s: float = 30.0
    lease_s: int = DEFAULT_LEASE_S
    restore_environment: bool = False  # tests: undo every environment change on stop


class LocalHost:
    """Start with ``start()``, stop with ``stop()``; ``base_url`` is the HTTP root once started."""

    def __init__(self, options: HostOptions, environ: MutableMapping[str, str] | None = None) -> None:
        self.options = options
        self._environ = os.environ if environ is None else environ
        self._saved_env: dict[str, Any] = {}
        self._queue_services: dict[str, QueueServiceClient] = {}
        self.functions: dict[str, FunctionSpec] = {}
        self.enabled: list[str] = []
        self.queue_listeners: dict[str, QueueListener] = {}
        self.timer_listeners: dict[str, TimerListener] = {}
        self.http: LocalHttpServer | None = None
        self.config: HostConfig | None = None
        self._invoker: Invoker | None = None
        self._monitor: ScheduleMonitor | None = None
        self._stopped = threading.Event()

    # --- settings --------------------------------------------------------------------------------
    def _set_env(self, name: str, value: str) -> None:
        if name not in self._saved_env:
            self._saved_env[name] = self._environ.get(name, _UNSET)
        self._environ[name] = value

    def _apply_settings(self) -> None:
        for name, value in self.options.settings.items():
            self._set_env(name, value)
        settings_file = self.options.settings_file or self.options.script_root / "local.settings.json"
        values = load_local_settings(settings_file)
        for name in values:
            if name not in self._saved_env:
                self._saved_env[name] = self._environ.get(name, _UNSET)
        apply_local_settings(values, self._environ)
        # The app's settings and clients must see the values just loaded, not a previous host's (tests).
        for module, name in (("shared.settings", "reset_settings_cache"), ("shared.deps", "reset_deps")):
            reset = getattr(sys.modules.get(module), name, None)
            if callable(reset):
                reset()

    def _restore_environment(self) -> None:
        for name, previous in self._saved_env.items():
            if previous is _UNSET:
                self._environ.pop(name, None)
            else:
                self._environ[name] = previous
        self._saved_env.clear()

    def _connection_string(self, function_name: str, connection: str | None) -> str:
        name = connection or "AzureWebJobsStorage"
        value = self._environ.get(name) or self._environ.get(f"AzureWebJobs{name}")
        if not value:
            raise SettingError(
                f"Function {function_name}: Storage account connection string '{name}' does not exist. "
                "Make sure that it is a defined App Setting."
            )
        return value

    def _queue_service(self, function_name: str, connection: str | None) -> QueueServiceClient:
        connection_string = self._connection_string(function_name, connection)
        if connection_string not in self._queue_services:
            self._queue_services[connection_string] = QueueServiceClient.from_connection_string(connection_string)
        return self._queue_services[connection_string]

    # --- building listeners ----------------------------------------------------------------------
    def _select(self, specs: list[FunctionSpec]) -> list[FunctionSpec]:
        by_name = {spec.name: spec for spec in specs}
        wanted = self.options.functions
        if wanted is not None:
            unknown = [name for name in wanted if name not in by_name]
            if unknown:
                raise SettingError(f"unknown functions {unknown}; the app has {sorted(by_name)}")
            specs = [by_name[name] for name in wanted]
        enabled = []
        for spec in specs:
            if is_function_disabled(spec.name, self._environ):
                self._resolve_bindings(spec)
                logger.info("Function '%s' is disabled", spec.name)
            else:
                enabled.append(spec)
        return enabled

    def _resolve_bindings(self, spec: FunctionSpec) -> None:
        # The host indexes disabled functions too, resolving their %SETTING% expressions (queue names,
        # schedules) as it binds them: a missing setting fails the start although the function never runs.
        for binding in spec.bindings:
            for value in binding.values():
                if isinstance(value, str):
                    resolve_expression(value, spec.name, self._environ)

    def _build_queue(self, spec: FunctionSpec, config: HostConfig, invoker: Invoker) -> QueueListener:
        queue_name = resolve_expression(spec.trigger["queueName"], spec.name, self._environ)
        outputs = {}
        for binding in spec.output_bindings():
            if binding.get("type") == "queue":
                out_queue = resolve_expression(binding["queueName"], spec.name, self._environ)
                outputs[binding["name"]] = (self._queue_service(spec.name, binding.get("connection")), out_queue)
        return QueueListener(
            spec,
            queue_name,
            self._queue_service(spec.name, spec.trigger.get("connection")),
            options=config.queues_for(spec.name),
            invoker=invoker,
            output_queues=outputs,
            lease_s=self.options.lease_s,
        )

    def _schedule_monitor(self) -> ScheduleMonitor | None:
        connection_string = self._environ.get("AzureWebJobsStorage", "")
        if "BlobEndpoint=" not in connection_string and "UseDevelopmentStorage" not in connection_string:
            return None
        host_id = self._environ.get("AzureFunctionsWebHost__hostid") or (
            "devhost-" + hashlib.sha256(str(self.options.script_root.resolve()).encode()).hexdigest()[:12]
        )
        return ScheduleMonitor(BlobServiceClient.from_connection_string(connection_string), host_id)

    def _build_timer(self, spec: FunctionSpec, invoker: Invoker, monitor: ScheduleMonitor | None) -> TimerListener:
        expression = resolve_expression(str(spec.trigger["schedule"]), spec.name, self._environ)
        try:
            schedule = parse_schedule(expression)
        except CrontabError as exc:
            raise SettingError(f"Function {spec.name}: invalid schedule: {exc}") from None
        return TimerListener(spec, schedule, invoker, monitor)

    def _build_routes(self, specs: list[FunctionSpec]) -> list[HttpRoute]:
        routes = []
        for spec in specs:
            if spec.trigger_type != "httpTrigger":
                continue
            template = (spec.trigger.get("route") or spec.name).strip("/")
            methods = spec.trigger.get("methods")
            routes.append(
                HttpRoute(
                    spec=spec,
                    pattern=compile_route(template),
                    methods=frozenset(m.upper() for m in methods) if methods else None,
                    auth_level=str(spec.trigger.get("authLevel") or "FUNCTION"),
                    disabled=spec.name not in self.enabled,
                )
            )
        # Literal segments win over parameters, as in ASP.NET routing: sort by fewer parameters first.
        routes.sort(key=lambda r: (r.pattern.pattern.count("(?P<"), -len(r.pattern.pattern)))
        return routes

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Load settings, index the app and start every enabled function's listener and the HTTP server.

        Raises ``SettingError`` / ``HostConfigError`` / ``IndexError_`` before anything starts, also when a
        *disabled* selected function's binding names a setting that is not set (as the host's indexing does).
        """
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self._apply_settings()
        root = self.options.script_root
        config = load_host_config(root / "host.json", self._environ)
        self.config = config
        script_file = self._environ.get("PYTHON_SCRIPT_FILE_NAME") or "function_app.py"
        specs = index_app(load_app_module(root, script_file))
        self.functions = {spec.name: spec for spec in specs}
        enabled = self._select(specs)
        self.enabled = [spec.name for spec in enabled]
        invoker = Invoker(str(root.resolve()))
        self._invoker = invoker
        monitor = None
        for spec in enabled:
            if spec.trigger_type == "queueTrigger":
                self.queue_listeners[spec.name] = self._build_queue(spec, config, invoker)
            elif spec.trigger_type == "timerTrigger":
                monitor = monitor or self._schedule_monitor()
                self._monitor = monitor
                self.timer_listeners[spec.name] = self._build_timer(spec, invoker, monitor)
            elif spec.trigger_type != "httpTrigger":
                raise SettingError(f"Function {spec.name}: trigger {spec.trigger_type} is not supported locally")
        keys = {
            "function": self._environ.get(FUNCTION_KEY_SETTING) or None,
            "master": self._environ.get(MASTER_KEY_SETTING) or secrets.token_urlsafe(24),
        }
        self.http = LocalHttpServer(
            self._build_routes(list(self.functions.values())),
            invoker,
            route_prefix=config.route_prefix,
            keys=keys,
            admin_invoke=self.invoke_now,
            host=self.options.host,
            port=self.options.port,
        )
        self.http.start()
        for listener in self.queue_listeners.values():
            listener.start()
        for timer in self.timer_listeners.values():
            timer.start()
        self._log_functions(config)

    def _log_functions(self, config: HostConfig) -> None:
        lines = []
        for name in self.enabled:
            spec = self.functions[name]
            if spec.trigger_type == "httpTrigger":
                methods = ",".join(spec.trigger.get("methods") or ["ANY"])
                route = (spec.trigger.get("route") or name).strip("/")
                lines.append(f"\t{name}: [{methods}] {self.base_url}/{config.route_prefix}/{route}")
            elif name in self.queue_listeners:
                lines.append(
                    f"\t{name}: queueTrigger '{self.queue_listeners[name].queue_name}' "
                    f"(concurrency {config.queues_for(name).concurrency})"
                )
            else:
                lines.append(f"\t{name}: timerTrigger '{self.timer_listeners[name].schedule.expression}'")
        logger.info("Functions:\n%s\nHost started on %s", "\n".join(lines) or "\t(none enabled)", self.base_url)

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>`` of the HTTP server."""
        port = self.http.port if self.http else self.options.port
        return f"http://{self.options.host}:{port}"

    def invoke_now(self, name: str, input_text: str | None = None) -> bool | None:
        """Run an enabled non-HTTP function once now (the admin endpoint). ``None`` if there is no such function."""
        spec = self.functions.get(name)
        if spec is None or name not in self.enabled or self._invoker is None:
            return None
        if name in self.timer_listeners:
            timer = self.timer_listeners[name]
            threading.Thread(target=timer.invoke_now, name=f"devhost-admin-{name}", daemon=True).start()
            return True
        if name in self.queue_listeners:
            message = QueueMessage(  # type: ignore[no-untyped-call]
                id="admin", body=(input_text or "").encode("utf-8"), dequeue_count=1, insertion_time=datetime.now(UTC)
            )
            self._invoker.invoke(spec, {spec.trigger["name"]: message})
            return True
        return None

    def stop(self) -> None:
        """Stop polling and timers, wait up to ``grace_s`` for running work, release the rest, close HTTP."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        listeners: list[QueueListener | TimerListener] = [
            *self.queue_listeners.values(),
            *self.timer_listeners.values(),
        ]
        stoppers = [
            threading.Thread(target=listener.stop, args=(self.options.grace_s,), daemon=True) for listener in listeners
        ]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        if self.http is not None:
            self.http.stop()
        if self._invoker is not None:
            self._invoker.shutdown()
        for service in self._queue_services.values():
            service.close()
        if self._monitor is not None:
            self._monitor.close()
        if self.options.restore_environment:
            self._restore_environment()
        logger.info("Host stopped")
