"""All settings the workers read, as one typed, validated object.

Settings come from app settings (environment variables; ``local.settings.json`` ``Values`` locally; Key
Vault references in Azure). They are read on first use, never at import: ``get_settings()`` builds the object
once per process. Tests build it from a dict with ``Settings.from_env({...})``.

Formats are validated when the object is built; whether a setting is *required* depends on the worker that
uses it, so presence is checked where it is used (``settings.require("EXOTEL_SID", ...)``). Every error names
the variable and never shows its value.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from shared.errors import ConfigurationError

__all__ = ["Settings", "get_settings", "reset_settings_cache"]

_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")
# Azure queue names are 3-63 characters; ours leave room for the "-poison" suffix the host appends.
_MAX_QUEUE_NAME = 63 - len("-poison")


def _queue_name(value: str) -> str:
    if not (3 <= len(value) <= _MAX_QUEUE_NAME) or not _QUEUE_NAME.match(value):
        raise ValueError(
            f"must be 3-{_MAX_QUEUE_NAME} lowercase letters, digits and single hyphens, "
            "starting and ending with a letter or digit"
        )
    return value


def _url_with_scheme(*schemes: str) -> Any:
    def check(value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None:
            return value
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            # Never echo the value: URLs here often carry credentials.
            raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return value

    return AfterValidator(check)


def _ncrontab(value: str) -> str:
    # The host accepts six fields (seconds first) or five. %SETTING% expressions are resolved before this.
    if len(value.split()) not in (5, 6):
        raise ValueError("must be an NCRONTAB expression with six fields (seconds first) or five")
    return value


QueueName = Annotated[str, AfterValidator(_queue_name)]
HttpUrl = Annotated[str, _url_with_scheme("http", "https")]
Concurrency = Annotated[int, Field(ge=1, le=64)]


class Settings(BaseModel):
    """Every app setting a worker reads. Field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    # --- Storage (queues, blobs): a connection string, or identity-based service URIs in Azure.
    storage_connection_string: SecretStr | None = Field(None, alias="AzureWebJobsStorage")
    storage_queue_service_uri: HttpUrl | None = Field(None, alias="AzureWebJobsStorage__queueServiceUri")
    storage_blob_service_uri: HttpUrl | None = Field(None, alias="AzureWebJobsStorage__blobServiceUri")
    storage_client_id: str | None = Field(None, alias="AzureWebJobsStorage__clientId")

    # --- Queues. Bindings name them as %SETTING% expressions, so the host and our code agree.
    email_queue_name: QueueName = Field("email-processing", alias="EMAIL_QUEUE_NAME")
    whatsapp_queue_name: QueueName = Field("whatsapp-processing", alias="WHATSAPP_QUEUE_NAME")
    whatsapp_priority_queue_name: QueueName = Field(
        "whatsapp-processing-high", alias="WHATSAPP_PRIORITY_QUEUE_NAME"
    )
    transcription_queue_name: QueueName = Field("transcription-processing", alias="TRANSCRIPTION_QUEUE_NAME")

    # --- Retry policy of the job boundary (our "retry later" path, separate from the host's dequeue count).
    job_max_attempts: int = Field(6, ge=1, le=50, alias="JOB_MAX_ATTEMPTS")
    retry_base_delay_s: float = Field(2.0, gt=0, le=3600, alias="RETRY_BASE_DELAY_S")
    retry_max_delay_s: float = Field(600.0, gt=0, le=7 * 24 * 3600, alias="RETRY_MAX_DELAY_S")
    job_max_age_s: float = Field(24 * 3600.0, gt=0, le=7 * 24 * 3600, alias="JOB_MAX_AGE_S")

    # --- Coordination.
    redis_url: Annotated[SecretStr | None, _url_with_scheme("redis", "rediss", "unix")] = Field(
        None, alias="REDIS_URL"
    )

    # --- Database: direct Postgres, or the Supabase pair.
    database_url: Annotated[SecretStr | None, _url_with_scheme("postgres", "postgresql")] = Field(
        None, alias="DATABASE_URL"
    )
    database_pool_max_size: int = Field(4, ge=1, le=50, alias="DATABASE_POOL_MAX_SIZE")
    database_connect_timeout_s: float = Field(10.0, gt=0, le=120, alias="DATABASE_CONNECT_TIMEOUT_S")
    supabase_url: HttpUrl | None = Field(None, alias="SUPABASE_URL")
    supabase_service_role_key: SecretStr | None = Field(None, alias="SUPABASE_SERVICE_ROLE_KEY")

    # --- Concurrency, as the seed named it. No worker code reads these. The local host (devhost/hostconfig.py)
    # sets each worker's queue functions to it (batchSize + newBatchThreshold) unless an explicit
    # AzureFunctionsJobHost__extensions__queues__batchSize/__newBatchThreshold is set. In Azure they change
    # nothing: infra sets those two host settings per app from Bicep parameters and writes the sum into
    # <WORKER>_WORKER_CONCURRENCY for information. `func start` ignores them too.
    worker_concurrency: Concurrency | None = Field(None, alias="WORKER_CONCURRENCY")
    email_worker_concurrency: Concurrency | None = Field(None, alias="EMAIL_WORKER_CONCURRENCY")
    whatsapp_worker_concurrency: Concurrency | None = Field(None, alias="WHATSAPP_WORKER_CONCURRENCY")
    transcription_worker_concurrency: Concurrency | None = Field(
        None, alias="TRANSCRIPTION_WORKER_CONCURRENCY"
    )

    # --- Email poller.
    email_poll_interval_ms: int = Field(30_000, ge=1_000, le=86_400_000, alias="EMAIL_POLL_INTERVAL")
    email_poll_schedule: Annotated[str, AfterValidator(_ncrontab)] = Field(
        "*/30 * * * * *", alias="EMAIL_POLL_SCHEDULE"
    )
    email_encryption_key: SecretStr | None = Field(None, alias="EMAIL_ENCRYPTION_KEY")
    email_legacy_encryption_key: SecretStr | None = Field(None, alias="EMAIL_LEGACY_ENCRYPTION_KEY")
    email_backfill_days: int = Field(7, ge=0, le=3650, alias="EMAIL_BACKFILL_DAYS")
    email_fetch_chunk: int = Field(50, ge=1, le=1000, alias="EMAIL_FETCH_CHUNK")
    email_max_message_bytes: int = Field(25 * 1024 * 1024, ge=1024, alias="EMAIL_MAX_MESSAGE_BYTES")
    email_max_tries_per_message: int = Field(3, ge=1, le=20, alias="EMAIL_MAX_TRIES_PER_MESSAGE")
    email_resync_max_messages: int = Field(1000, ge=1, alias="EMAIL_RESYNC_MAX_MESSAGES")
    email_lease_ttl_s: int = Field(300, ge=10, le=86_400, alias="EMAIL_LEASE_TTL_S")
    email_attachments_container: str = Field("email-attachments", alias="EMAIL_ATTACHMENTS_CONTAINER")
    email_events_channel: str = Field("banxway:messages:created", alias="EMAIL_EVENTS_CHANNEL")
    imap_ca_file: str | None = Field(None, alias="IMAP_CA_FILE")
    imap_timeout_s: float = Field(30.0, gt=0, le=300, alias="IMAP_TIMEOUT_S")
    # Comma-separated hosts a plain-text (imap_tls=false) account may log in to without STARTTLS: local tests only.
    imap_allow_plaintext_hosts: str = Field("", alias="IMAP_ALLOW_PLAINTEXT_HOSTS")

    # --- Exotel (WhatsApp sends, recording downloads).
    exotel_sid: str | None = Field(None, alias="EXOTEL_SID")
    exotel_api_key: SecretStr | None = Field(None, alias="EXOTEL_API_KEY")
    exotel_token: SecretStr | None = Field(None, alias="EXOTEL_TOKEN")
    exotel_api_url: HttpUrl = Field("https://api.exotel.com", alias="EXOTEL_API_URL")
    exotel_whatsapp_number: str | None = Field(None, alias="EXOTEL_WHATSAPP_NUMBER")
    exotel_status_callback_url: HttpUrl | None = Field(None, alias="EXOTEL_STATUS_CALLBACK_URL")
    exotel_callback_secret: SecretStr | None = Field(None, alias="EXOTEL_CALLBACK_SECRET")
    exotel_connect_timeout_s: float = Field(5.0, gt=0, le=60, alias="EXOTEL_CONNECT_TIMEOUT_S")
    exotel_read_timeout_s: float = Field(15.0, gt=0, le=300, alias="EXOTEL_READ_TIMEOUT_S")
    whatsapp_rate_per_s: float = Field(10.0, gt=0, le=1000, alias="WHATSAPP_RATE_PER_S")
    whatsapp_priority_reserve: float = Field(0.2, ge=0, lt=1, alias="WHATSAPP_PRIORITY_RESERVE")
    whatsapp_priority_threshold: int = Field(3, ge=1, le=10, alias="WHATSAPP_PRIORITY_THRESHOLD")
    whatsapp_max_wait_s: float = Field(2.0, ge=0, le=30, alias="WHATSAPP_MAX_WAIT_S")
    whatsapp_claim_stale_s: int = Field(300, ge=30, alias="WHATSAPP_CLAIM_STALE_S")
    circuit_failure_threshold: int = Field(5, ge=1, le=1000, alias="CIRCUIT_FAILURE_THRESHOLD")
    circuit_cooldown_s: float = Field(30.0, gt=0, le=3600, alias="CIRCUIT_COOLDOWN_S")

    # --- OpenAI (or Azure OpenAI / an OpenAI-compatible server through the base URL).
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    openai_base_url: HttpUrl | None = Field(None, alias="OPENAI_BASE_URL")
    openai_api_version: str | None = Field(None, alias="OPENAI_API_VERSION")
    openai_timeout_s: float = Field(600.0, gt=0, le=3600, alias="OPENAI_TIMEOUT_S")
    transcription_model: str = Field("whisper-1", alias="TRANSCRIPTION_MODEL")
    transcription_language: str | None = Field(None, pattern=r"^[a-z]{2,3}$", alias="TRANSCRIPTION_LANGUAGE")
    transcription_response_format: str = Field("verbose_json", alias="TRANSCRIPTION_RESPONSE_FORMAT")
    transcription_max_in_flight: int = Field(9, ge=1, le=1000, alias="TRANSCRIPTION_MAX_IN_FLIGHT")
    recording_allowed_hosts: str = Field(
        "recordings.exotel.com,s3-ap-southeast-1.amazonaws.com", alias="RECORDING_ALLOWED_HOSTS"
    )
    recording_max_bytes: int = Field(500 * 1024 * 1024, ge=1024, alias="RECORDING_MAX_BYTES")
    recording_timeout_s: float = Field(60.0, gt=0, le=600, alias="RECORDING_TIMEOUT_S")
    # Hosts (``host`` or ``host:port``) that may be fetched over plain http and resolve to loopback: local
    # stand-ins only. Empty in production, where recordings are https from public addresses only.
    recording_allow_http_hosts: str = Field("", alias="RECORDING_ALLOW_HTTP_HOSTS")

    # --- Telemetry (the platform worker configures Azure Monitor; see README "Observability").
    applicationinsights_connection_string: SecretStr | None = Field(
        None, alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build and validate settings from a mapping of variables (``os.environ`` by default).

        Empty strings count as unset. Raises ``ConfigurationError`` naming every bad variable.
        """
        source = os.environ if environ is None else environ
        names = {field.alias for field in cls.model_fields.values() if field.alias}
        values = {name: source[name] for name in names if source.get(name, "").strip() != ""}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
            )
            raise ConfigurationError(f"invalid settings: {problems}") from None

    def require(self, *names: str) -> None:
        """Raise ``ConfigurationError`` naming every listed variable that is not set."""
        by_alias = {field.alias: attr for attr, field in type(self).model_fields.items()}
        unknown = [name for name in names if name not in by_alias]
        if unknown:
            raise KeyError(f"not a known setting: {', '.join(unknown)}")
        missing = [name for name in names if getattr(self, by_alias[name]) is None]
        if missing:
            raise ConfigurationError(f"missing settings: {', '.join(missing)} must be set")

    @property
    def store_backend(self) -> str:
        """``postgres`` when DATABASE_URL is set, else ``supabase`` when the Supabase pair is set."""
        if self.database_url is not None:
            return "postgres"
        if self.supabase_url is not None and self.supabase_service_role_key is not None:
            return "supabase"
        raise ConfigurationError(
            "missing settings: set DATABASE_URL, or both SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
        )

    def secret_values(self) -> list[str]:
        """Every secret value that is set, for log scrubbing and for tests that scan logs for leaks."""
        found = []
        for attr in type(self).model_fields:
            value = getattr(self, attr)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
        return found


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first call."""
    return Settings.from_env()


def reset_settings_cache() -> None:
    """Forget the cached settings (tests and the local host after reloading local.settings.json)."""
    get_settings.cache_clear()
