"""Dependency wiring: every client is built here, lazily, once per process.

Nothing is built at import time or per invocation. ``get_deps()`` returns the process-wide ``Deps``; tests
build ``Deps(settings)`` themselves (or pass their own clients) and never patch the environment.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from shared.errors import ConfigurationError
from shared.jobs import Envelope, JobKind
from shared.outcomes import JobObserver, JobResult, RetryPolicy, run_job
from shared.queues import MessageEncoding, QueueOps
from shared.settings import Settings, get_settings

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient
    from redis import Redis

    from shared.metrics import Metrics
    from shared.store import Store
    from shared.transcription.handler import TranscriptionServices
    from shared.whatsapp.handler import WhatsAppServices

__all__ = ["Deps", "QueueMessageLike", "get_deps", "host_queue_settings", "reset_deps"]

_HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
T = TypeVar("T")
S = TypeVar("S")


class QueueMessageLike(Protocol):
    """What the boundary needs of ``azure.functions.QueueMessage``."""

    @property
    def id(self) -> str | None: ...

    def get_body(self) -> bytes: ...


def host_queue_settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """host.json's ``extensions.queues`` with ``AzureFunctionsJobHost__extensions__queues__*`` overrides."""
    import os

    env = os.environ if environ is None else environ
    config = json.loads(_HOST_JSON.read_text(encoding="utf-8"))
    queues: dict[str, Any] = dict(config.get("extensions", {}).get("queues", {}))
    prefix = "azurefunctionsjobhost__extensions__queues__"
    for name, value in env.items():
        if name.lower().startswith(prefix):
            key = name[len(prefix) :]
            match = next((k for k in queues if k.lower() == key.lower()), key)
            queues[match] = value
    return queues


class Deps:
    """The clients a worker needs, each built on first use from ``settings``."""

    def __init__(self, settings: Settings, *, message_encoding: MessageEncoding | None = None) -> None:
        self.settings = settings
        self._message_encoding = message_encoding
        self._locks_guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._built: dict[str, Any] = {}
        self.observers: list[JobObserver] = []
        self._register_default_observers()

    def _register_default_observers(self) -> None:
        # Job counts and durations for /api/metrics (Redis resolved on first job; never raises), and a span
        # plus a job-end log record per job for Application Insights.
        from shared.metrics import MetricsObserver
        from shared.telemetry import TelemetryObserver

        self.observers.append(MetricsObserver(lambda: self.metrics))
        self.observers.append(TelemetryObserver())

    def _once(self, name: str, build: Callable[[], T]) -> T:
        # Sync functions run in the worker's thread pool: build each client exactly once. One lock per client
        # (re-entrant: a build may need another client), so a slow build (importing openai) never blocks the
        # others, e.g. /api/metrics while the first transcription starts.
        if name in self._built:
            return self._built[name]  # type: ignore[no-any-return]
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.RLock())
        with lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]  # type: ignore[no-any-return]

    @property
    def redis(self) -> Redis:
        """Redis for coordination (rate limits, leases, metrics). Explicit timeouts; never at import."""

        def build() -> Redis:
            from redis import Redis

            self.settings.require("REDIS_URL")
            assert self.settings.redis_url is not None
            return Redis.from_url(
                self.settings.redis_url.get_secret_value(),
                socket_timeout=5,
                socket_connect_timeout=5,
                health_check_interval=30,
                decode_responses=False,
            )

        return self._once("redis", build)

    @property
    def store(self) -> Store:
        """The database (direct Postgres or Supabase, chosen by the settings). Connects on first use."""

        def build() -> Store:
            from shared.store import build_store

            return build_store(self.settings)

        return self._once("store", build)

    @property
    def whatsapp(self) -> WhatsAppServices:
        """The WhatsApp worker's Exotel client, shared rate limiter and circuit, store and metrics."""

        def build() -> WhatsAppServices:
            from shared.whatsapp.wiring import build_whatsapp_services

            return build_whatsapp_services(self.settings, store=self.store, redis=self.redis, metrics=self.metrics)

        return self._once("whatsapp", build)

    @property
    def transcription(self) -> TranscriptionServices:
        """The transcription worker's OpenAI transcriber, global semaphore, download policy, store and metrics."""

        def build() -> TranscriptionServices:
            from shared.transcription.wiring import build_transcription_services

            return build_transcription_services(self.settings, store=self.store, redis=self.redis,
                                                metrics=self.metrics)

        return self._once("transcription", build)

    @property
    def metrics(self) -> Metrics:
        """The Redis-aggregated metrics registry (``shared.metrics``)."""

        def build() -> Metrics:
            from shared.metrics import Metrics
            from shared.telemetry import OtelMirror

            return Metrics(self.redis, mirror=OtelMirror())

        return self._once("metrics", build)

    @property
    def queue_service(self) -> QueueServiceClient:
        def build() -> QueueServiceClient:
            from azure.storage.queue import QueueServiceClient

            return self._storage_client(
                QueueServiceClient, self.settings.storage_queue_service_uri, "AzureWebJobsStorage__queueServiceUri"
            )

        return self._once("queue_service", build)

    @property
    def blob_service(self) -> BlobServiceClient:
        def build() -> BlobServiceClient:
            from azure.storage.blob import BlobServiceClient

            return self._storage_client(
                BlobServiceClient, self.settings.storage_blob_service_uri, "AzureWebJobsStorage__blobServiceUri"
            )

        return self._once("blob_service", build)

    def storage_client_options(self) -> dict[str, Any]:
        """Keyword options for the storage clients (retry policy, timeouts); the SDK defaults here.

        Subclasses override it, e.g. the ops command line caps retries so it fails in seconds.
        """
        return {}

    def _storage_client(self, client_class: type[S], service_uri: str | None, uri_setting: str) -> S:
        """A queue or blob service client from the connection string, or identity-based from its URI."""
        options = self.storage_client_options()
        connection_string = self.settings.storage_connection_string
        if connection_string is not None:
            return client_class.from_connection_string(  # type: ignore[attr-defined,no-any-return]
                connection_string.get_secret_value(), **options
            )
        if service_uri is not None:
            return client_class(service_uri, credential=self._credential(), **options)  # type: ignore[call-arg]
        raise ConfigurationError(
            f"missing settings: set AzureWebJobsStorage, or {uri_setting} for an identity-based connection"
        )

    @property
    def queues(self) -> QueueOps:
        def build() -> QueueOps:
            encoding = self._message_encoding or host_queue_settings().get("messageEncoding", "base64")
            if encoding not in ("base64", "none"):
                raise ConfigurationError("host.json extensions.queues.messageEncoding must be base64 or none")
            return QueueOps(self.queue_service, encoding=encoding, blob_service=self.blob_service)

        return self._once("queues", build)

    @property
    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(
            max_attempts=s.job_max_attempts,
            base_delay_s=s.retry_base_delay_s,
            max_delay_s=s.retry_max_delay_s,
            max_age_s=s.job_max_age_s,
        )

    def run_message(
        self,
        msg: QueueMessageLike,
        *,
        kind: JobKind,
        queue: str,
        handler: Callable[[Envelope[Any]], None],
    ) -> JobResult:
        """Run ``handler`` on a queue message through the job boundary (``shared.outcomes.run_job``)."""
        return run_job(
            kind=kind,
            queue=queue,
            body=msg.get_body(),
            message_id=msg.id,
            handler=handler,
            queues=self.queues,
            policy=self.retry_policy,
            observers=self.observers,
        )

    def _credential(self) -> Any:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(managed_identity_client_id=self.settings.storage_client_id)


@functools.cache
def get_deps() -> Deps:
    """The process-wide dependencies, built on first use; configures telemetry once per process."""
    from shared.telemetry import setup_process_telemetry

    deps = Deps(get_settings())
    setup_process_telemetry(deps)
    return deps


def reset_deps() -> None:
    """Forget the process-wide dependencies (tests, the local host after a settings reload)."""
    get_deps.cache_clear()
