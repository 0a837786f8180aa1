"""Which recording URLs we fetch: scheme, host allow-list and resolved addresses (SSRF defence).

A user-supplied ``audioUrl`` is checked before the first request and again on every redirect:

- https only; plain http only for hosts in RECORDING_ALLOW_HTTP_HOSTS (local stand-ins), which must then
  resolve to loopback addresses;
- the host must be in RECORDING_ALLOWED_HOSTS (exact, case-insensitive);
- every address the name resolves to must be public: no private, loopback, link-local (169.254.0.0/16,
  cloud metadata), shared (100.64.0.0/10), reserved, multicast or unspecified address, and not Azure's
  platform address 168.63.129.16. A name with any such address is refused as a whole.

The resolved addresses are returned so the caller connects to exactly the address that was checked
(pinning), which closes the DNS-rebinding gap between check and connect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from shared.settings import Settings
from shared.transcription.errors import UnsafeRecordingUrl

__all__ = ["Resolver", "Target", "UrlPolicy", "redact_url", "system_resolver"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

# Addresses that are "global" by the IANA tables but are platform endpoints inside clouds.
_PLATFORM_ADDRESSES = frozenset({ipaddress.ip_address("168.63.129.16")})


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` without credentials, query or fragment: safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (the checked addresses) and what to ask for."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    path_and_query: str
    host_header: str
    username: str | None
    password: str | None

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def _split_hosts(raw: str) -> frozenset[str]:
    return frozenset(item.strip().lower().rstrip(".") for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class UrlPolicy:
    """The allow-lists, built from settings."""

    allowed_hosts: frozenset[str]
    http_hosts: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        """RECORDING_ALLOWED_HOSTS and RECORDING_ALLOW_HTTP_HOSTS (``host`` or ``host:port`` entries)."""
        http_hosts = _split_hosts(settings.recording_allow_http_hosts)
        # An http test host is allow-listed by being named there; no need to repeat it.
        allowed = _split_hosts(settings.recording_allowed_hosts) | {_host_only(h) for h in http_hosts}
        return cls(allowed_hosts=allowed, http_hosts=http_hosts)

    def check(self, url: str, *, resolve: Resolver = system_resolver) -> Target:
        """Check ``url`` and resolve its host; raise ``UnsafeRecordingUrl`` naming the reason."""
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise UnsafeRecordingUrl(f"recording URL {shown} is malformed") from None
        host = (parts.hostname or "").lower().rstrip(".")
        if parts.scheme not in ("http", "https") or not host:
            raise UnsafeRecordingUrl(f"recording URL {shown} must be an absolute https URL")
        if host not in self.allowed_hosts:
            raise UnsafeRecordingUrl(
                f"recording host {host!r} is not in RECORDING_ALLOWED_HOSTS ({shown})"
            )
        port = port or (443 if parts.scheme == "https" else 80)
        http_test_host = bool({host, f"{host}:{port}", f"[{host}]:{port}"} & self.http_hosts)
        if parts.scheme == "http" and not http_test_host:
            raise UnsafeRecordingUrl(f"recording URL {shown} uses plain http; only https is allowed")
        addresses = self._checked_addresses(host, port, loopback_only=http_test_host, resolve=resolve)
        return _target(parts, host, port, addresses)

    @staticmethod
    def _checked_addresses(host: str, port: int, *, loopback_only: bool, resolve: Resolver) -> tuple[str, ...]:
        try:
            found = list(resolve(host, port))
        except (OSError, UnicodeError) as exc:
            raise UnsafeRecordingUrl(f"recording host {host!r} does not resolve ({exc})") from None
        if not found:
            raise UnsafeRecordingUrl(f"recording host {host!r} does not resolve")
        for raw in found:
            address = _address(raw)
            if loopback_only:
                if not address.is_loopback:
                    raise UnsafeRecordingUrl(
                        f"recording host {host!r} is an http test host but resolves to {address}, not loopback"
                    )
                continue
            problem = _refusal(address)
            if problem:
                raise UnsafeRecordingUrl(f"recording host {host!r} resolves to {address}, a {problem} address")
        return tuple(found)


def _host_only(entry: str) -> str:
    """``host:port`` → ``host`` (IPv6 entries are written bracketed: ``[::1]:8080``)."""
    if entry.startswith("["):
        return entry[1:].split("]", 1)[0]
    return entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry


def _address(raw: str) -> IpAddress:
    address = ipaddress.ip_address(raw.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _refusal(address: IpAddress) -> str | None:
    """Why an address is refused (a short adjective), or None when it is a public address."""
    checks = (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local (cloud metadata)"),
        (address.is_private, "private"),
        (address.is_multicast, "multicast"),
        (address.is_unspecified, "unspecified"),
        (address.is_reserved, "reserved"),
        (address in _PLATFORM_ADDRESSES, "cloud platform"),
        (not address.is_global, "non-public"),
    )
    return next((name for hit, name in checks if hit), None)


def _target(parts: SplitResult, host: str, port: int, addresses: tuple[str, ...]) -> Target:
    default_port = 443 if parts.scheme == "https" else 80
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    path = parts.path or "/"
    return Target(
        scheme=parts.scheme,
        host=host,
        port=port,
        addresses=addresses,
        path_and_query=f"{path}?{parts.query}" if parts.query else path,
        host_header=host_header,
        username=parts.username,
        password=parts.password,
    )
