"""Safe recording download: checked URL, pinned connection, manual redirects, Basic auth, size cap, temp file.

Why urllib3 directly (it ships with requests): we connect to the *checked* IP address ourselves and still
verify TLS against the host name (``server_hostname``/``assert_hostname``), so a DNS answer that changes
between our check and the connection (DNS rebinding) cannot send us elsewhere. requests would resolve the
name again inside its connection pool. Redirects are followed by hand, each one re-checked the same way;
Basic auth goes only to the origin it was meant for (Exotel), never to a redirect on another host (a
pre-signed S3 URL refuses an Authorization header anyway).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError

from shared.settings import Settings
from shared.transcription.errors import (
    RecordingAccessDenied,
    RecordingNotReady,
    RecordingTooLarge,
    RecordingUnavailable,
    UnsafeRecordingUrl,
)
from shared.transcription.urlpolicy import Resolver, Target, UrlPolicy, redact_url, system_resolver

__all__ = ["Credentials", "DownloadLimits", "Downloaded", "download_recording"]

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
_AUDIO_SUFFIXES = frozenset({".mp3", ".wav", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".webm", ".flac",
                             ".mpga", ".mpeg", ".aac", ".amr", ".3gp"})


@dataclass(frozen=True)
class Credentials:
    """Basic-auth credentials (Exotel API key and token). ``repr`` never shows them."""

    username: str = field(repr=False)
    password: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials | None:
        """EXOTEL_API_KEY / EXOTEL_TOKEN, or None when either is unset."""
        if settings.exotel_api_key is None or settings.exotel_token is None:
            return None
        return cls(settings.exotel_api_key.get_secret_value(), settings.exotel_token.get_secret_value())


@dataclass(frozen=True)
class DownloadLimits:
    """Size cap and timeouts. ``read_timeout_s`` bounds each wait for bytes; ``deadline_s`` the whole body."""

    max_bytes: int
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    deadline_s: float = 900.0
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> DownloadLimits:
        """RECORDING_MAX_BYTES and RECORDING_TIMEOUT_S (per read; connect is at most 10 s)."""
        return cls(
            max_bytes=settings.recording_max_bytes,
            connect_timeout_s=min(10.0, settings.recording_timeout_s),
            read_timeout_s=settings.recording_timeout_s,
        )


@dataclass(frozen=True)
class Downloaded:
    """A recording on local disk (inside the caller's per-job directory)."""

    path: Path
    size_bytes: int
    content_type: str | None


def download_recording(
    url: str,
    directory: Path,
    *,
    policy: UrlPolicy,
    limits: DownloadLimits,
    credentials: Credentials | None,
    resolve: Resolver = system_resolver,
) -> Downloaded:
    """Fetch ``url`` into a new temporary file in ``directory`` (the caller's per-job directory).

    Raises ``UnsafeRecordingUrl`` (refused URL or redirect), ``RecordingAccessDenied`` (401/403),
    ``RecordingTooLarge``, ``RecordingNotReady`` (404) or ``RecordingUnavailable`` (timeouts, 429, 5xx).
    The partial file is removed on every failure.
    """
    started = time.monotonic()
    _install_log_redaction()
    target = policy.check(url, resolve=resolve)
    auth = _auth_for(target, credentials)
    auth_origin = target.origin
    current = url
    for _hop in range(limits.max_redirects + 1):
        response = _request(target, auth if target.origin == auth_origin else None, limits)
        try:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise UnsafeRecordingUrl(f"redirect {response.status} from {redact_url(current)} has no Location")
                current = urljoin(current, location)
                log.info("recording redirect %s -> %s", response.status, redact_url(current))
                target = policy.check(current, resolve=resolve)
                continue
            _check_status(response, current)
            return _save(response, current, directory, limits, started)
        finally:
            response.release_conn()
            response.close()
    raise UnsafeRecordingUrl(f"more than {limits.max_redirects} redirects from {redact_url(url)}")


_QUERY = re.compile(r"\?[^\s\"']*")


class _RedactQuery(logging.Filter):
    """Strip query strings from urllib3's request log lines (it logs the full path at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(arg.split("?", 1)[0] if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.msg, str):
            # Log redaction (shared/redaction.py) may already have merged the arguments into the message.
            record.msg = _QUERY.sub("", record.msg)
        return True


_REDACT_FILTER = _RedactQuery()


def _install_log_redaction() -> None:
    pool_log = logging.getLogger("urllib3.connectionpool")
    if _REDACT_FILTER not in pool_log.filters:
        pool_log.addFilter(_REDACT_FILTER)


def _auth_for(target: Target, credentials: Credentials | None) -> str | None:
    if target.username is not None:
        # Credentials in the URL itself (https://key:token@host/...) win; they are never logged.
        return urllib3.util.make_headers(basic_auth=f"{target.username}:{target.password or ''}")["authorization"]
    if credentials is not None:
        pair = f"{credentials.username}:{credentials.password}"
        return urllib3.util.make_headers(basic_auth=pair)["authorization"]
    return None


def _request(target: Target, auth: str | None, limits: DownloadLimits) -> Any:
    headers = {"Host": target.host_header, "Accept": "audio/*, */*;q=0.5", "Accept-Encoding": "identity",
               "User-Agent": "banxway-transcription/1"}
    if auth:
        headers["Authorization"] = auth
    timeout = urllib3.Timeout(connect=limits.connect_timeout_s, read=limits.read_timeout_s)
    last_error: Exception | None = None
    for address in target.addresses:  # the checked addresses only, in resolver order
        pool = _pool(target, address, timeout)
        try:
            return pool.urlopen("GET", target.path_and_query, headers=headers, redirect=False, retries=False,
                                preload_content=False, decode_content=False, assert_same_host=False)
        except SSLError as exc:
            raise UnsafeRecordingUrl(f"TLS verification failed for {target.host!r}: {exc}") from None
        except Urllib3Error as exc:
            last_error = exc
    raise RecordingUnavailable(f"recording host {target.host!r} unreachable: {last_error}") from None


def _pool(target: Target, address: str, timeout: urllib3.Timeout) -> urllib3.HTTPConnectionPool:
    if target.scheme == "https":
        import certifi

        return urllib3.HTTPSConnectionPool(
            address, target.port, timeout=timeout, maxsize=1, retries=False, cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(), server_hostname=target.host, assert_hostname=target.host,
        )
    return urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, maxsize=1, retries=False)


def _check_status(response: Any, url: str) -> None:
    status = int(response.status)
    shown = redact_url(url)
    if 200 <= status < 300:
        return
    if status in (401, 403):
        raise RecordingAccessDenied(
            f"recording server refused access ({status}) to {shown}; Exotel recordings are private and need "
            "EXOTEL_API_KEY/EXOTEL_TOKEN"
        )
    if status == 404:
        raise RecordingNotReady(f"recording not found (404) at {shown}; it may not be published yet",
                                retry_after_s=120.0)
    if status in (408, 425, 429) or status >= 500:
        raise RecordingUnavailable(f"recording server answered {status} for {shown}",
                                   retry_after_s=_retry_after_s(response.headers.get("Retry-After")))
    raise RecordingAccessDenied(f"recording server answered {status} for {shown}", code="recording_refused")


def _retry_after_s(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _save(response: Any, url: str, directory: Path, limits: DownloadLimits, started: float) -> Downloaded:
    shown = redact_url(url)
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise RecordingTooLarge(
            f"recording {shown} is {int(declared)} bytes (Content-Length); the limit is {limits.max_bytes} "
            "(RECORDING_MAX_BYTES)"
        )
    fd, name = tempfile.mkstemp(prefix="recording-", suffix=_suffix(url), dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            size = _copy(response, out, shown, limits, started)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    log.info("recording downloaded from %s: %d bytes", shown, size)
    return Downloaded(path=path, size_bytes=size, content_type=response.headers.get("Content-Type"))


def _copy(response: Any, out: IO[bytes], shown: str, limits: DownloadLimits, started: float) -> int:
    size = 0
    try:
        while chunk := response.read(_CHUNK_BYTES):
            size += len(chunk)
            if size > limits.max_bytes:
                raise RecordingTooLarge(
                    f"recording {shown} exceeded {limits.max_bytes} bytes (RECORDING_MAX_BYTES) while streaming; "
                    "download stopped"
                )
            if time.monotonic() - started > limits.deadline_s:
                raise RecordingUnavailable(f"recording {shown} took longer than {limits.deadline_s:.0f} s")
            out.write(chunk)
    except Urllib3Error as exc:
        raise RecordingUnavailable(f"recording download from {shown} failed after {size} bytes: {exc}") from None
    return size


def _suffix(url: str) -> str:
    suffix = Path(redact_url(url)).suffix.lower()
    return suffix if suffix in _AUDIO_SUFFIXES else ".bin"
