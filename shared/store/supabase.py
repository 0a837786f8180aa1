"""Store backend on Supabase (supabase-py over PostgREST, with the service role key).

Atomic steps are the same ``bx_*`` SQL functions the Postgres backend calls, invoked by RPC (one HTTP request
is one transaction in PostgREST). supabase is imported on first use, not at import: it pulls in auth,
realtime, storage and functions clients, which costs start-up time in every app.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.errors import WorkerError
from shared.store.base import ACCOUNT_COLUMNS, RpcStore
from shared.store.errors import StoreConfigurationError, StoreUnavailable, classify_sqlstate

__all__ = ["SupabaseStore"]

logger = logging.getLogger(__name__)

_CONFIG_HINT = "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
# Decrypting with the wrong key: pgcrypto raises 39000; a value that is not our base64 raises a 22xxx.
_NOT_THIS_KEY = ("39", "22")


class SupabaseStore(RpcStore):
    """``Store`` over supabase-py."""

    config_hint = _CONFIG_HINT

    def __init__(self, url: str, service_role_key: str, *, timeout_s: float = 10.0) -> None:
        """Keep the settings; the client is built on first use."""
        if not service_role_key:
            raise StoreConfigurationError("SUPABASE_SERVICE_ROLE_KEY is empty")
        self._url = url.rstrip("/")
        self._host = urlsplit(url).netloc or url
        self._key = service_role_key
        self._timeout_s = timeout_s
        self._client: Any = None
        self._http: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx
                from supabase import ClientOptions, create_client

                # Our own httpx client carries the timeout (supabase-py deprecates postgrest_client_timeout).
                self._http = httpx.Client(timeout=httpx.Timeout(self._timeout_s))
                options = ClientOptions(httpx_client=self._http, auto_refresh_token=False, persist_session=False)
                try:
                    self._client = create_client(self._url, self._key, options=options)
                except Exception as exc:
                    self._http.close()
                    raise StoreConfigurationError(f"cannot build the Supabase client: {exc}") from exc
            return self._client

    def _execute(self, request: Any) -> Any:
        """Run a postgrest request builder and map its failures to store errors."""
        import httpx
        from postgrest.exceptions import APIError

        try:
            return request.execute().data
        except APIError as exc:
            raise self._api_error(exc) from exc
        except httpx.TimeoutException as exc:
            raise StoreUnavailable(f"Supabase at {self._host} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise StoreUnavailable(
                f"cannot reach Supabase at {self._host} (SUPABASE_URL): {type(exc).__name__}: {exc}"
            ) from exc

    def _api_error(self, exc: Any) -> Exception:
        code = str(exc.code) if exc.code is not None else ""
        message = exc.message or "no message"
        if not code or code.isdigit():
            # Not a PostgREST body: the API gateway (bad key) or a proxy answered; code is None or the status.
            lowered = message.lower()
            if "api key" in lowered or "jwt" in lowered or code in ("401", "403"):
                return StoreConfigurationError(
                    f"Supabase at {self._host} rejected SUPABASE_SERVICE_ROLE_KEY: {message}"
                )
            if code.startswith("5") or not code:
                return StoreUnavailable(f"Supabase at {self._host} answered {code or 'an error'}: {message}")
            return StoreConfigurationError(
                f"SUPABASE_URL {self._host} does not serve the PostgREST API as expected "
                f"(HTTP {code}: {message})"
            )
        if code in ("PGRST301", "PGRST302", "42501"):
            return StoreConfigurationError(
                f"Supabase at {self._host} rejected SUPABASE_SERVICE_ROLE_KEY ({code}: {message}); "
                "it must be the service_role key"
            )
        return classify_sqlstate(code, message, config_hint=_CONFIG_HINT)

    # --- primitives
    def _call(self, function: str, payload: Mapping[str, Any]) -> Any:
        return self._execute(self._get_client().rpc(function, {"p": dict(payload)}))

    def _account_row(self, account_id: str) -> Mapping[str, Any] | None:
        request = (
            self._get_client().table("email_accounts").select(",".join(ACCOUNT_COLUMNS))
            .eq("id", account_id).limit(1).retry(False)
        )
        rows = self._execute(request)
        return rows[0] if rows else None

    def _decrypt(self, encrypted: str, key: str) -> str | None:
        from postgrest.exceptions import APIError

        request = self._get_client().rpc("decrypt_email_password", {"encrypted": encrypted, "key": key})
        try:
            result = self._execute(request)
        except WorkerError as exc:
            cause = exc.__cause__
            if isinstance(cause, APIError) and str(cause.code or "").startswith(_NOT_THIS_KEY):
                return None  # wrong key or not our ciphertext: the caller tries the next key
            raise
        return result if isinstance(result, str) else None

    def _update_account(self, account_id: str, values: Mapping[str, Any]) -> None:
        body = {key: value.isoformat() if isinstance(value, datetime) else value for key, value in values.items()}
        self._execute(self._get_client().table("email_accounts").update(body).eq("id", account_id))

    def ping(self) -> None:
        """One small GET through PostgREST (also proves the key and the migrated schema)."""
        self._execute(
            self._get_client().table("email_sync_state").select("email_account_id").limit(1).retry(False)
        )

    def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        with self._lock:
            http, self._http, self._client = self._http, None, None
        if http is not None:
            http.close()
