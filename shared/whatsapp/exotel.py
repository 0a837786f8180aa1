"""Thin adapter for Exotel's WhatsApp send API (``POST /v2/accounts/<sid>/messages``).

It receives its ``requests.Session``; it never builds one. One call is one HTTP request, without retries of
its own: the job boundary retries (one retry layer per operation).

Errors say what happens next (``shared.errors``):

- ``ExotelRateLimited`` (429) and ``ExotelUnavailable`` (5xx, refused connection) are *retry later*, with
  Retry-After honoured; they mean Exotel did not take the message;
- ``ExotelOutcomeUnknown`` (read timeout, connection lost after sending, a 2xx we cannot read) is *retry
  later* too, but the message may have been sent: the caller must not re-send it blindly;
- ``ExotelRejected`` (any other 4xx) and ``ExotelItemFailed`` (a 2xx whose item says ``failure``) are
  *reject*, keeping Exotel's error code and description.
"""

from __future__ import annotations

import base64
import logging
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from shared.errors import Reject, RetryLater
from shared.settings import Settings

__all__ = [
    "ExotelClient",
    "ExotelConfig",
    "ExotelItemFailed",
    "ExotelOutcomeUnknown",
    "ExotelRateLimited",
    "ExotelRejected",
    "ExotelUnavailable",
    "ItemResult",
    "OutboundMessage",
    "media_content",
    "media_filename",
    "retry_after_seconds",
    "template_content",
    "text_content",
]

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_REQUEST = 100
_MAX_DESCRIPTION_CHARS = 500


class ExotelRateLimited(RetryLater):
    """Exotel answered 429: wait at least Retry-After. Exotel did not take the message.

    A deferral (``counts_attempt=False``): a throttle says nothing about the message, and the handler pauses
    every sender for Retry-After, so the job keeps its attempt number (bounded by its age instead).
    """

    code = "exotel_rate_limited"

    def __init__(self, message: str, *, retry_after_s: float | None = None, code: str | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s, code=code, counts_attempt=False)


class ExotelUnavailable(RetryLater):
    """5xx or no connection: Exotel did not take the message; retry with backoff."""

    code = "exotel_unavailable"


class ExotelOutcomeUnknown(RetryLater):
    """The request may have reached Exotel (read timeout, connection lost, unreadable 2xx): never re-send
    blindly; reconcile (the message id travels in ``custom_data``)."""

    code = "exotel_outcome_unknown"


class ExotelRejected(Reject):
    """A permanent 4xx (400, 401, 402, 403, 404 ...), with Exotel's error code and description."""

    code = "exotel_rejected"

    def __init__(self, message: str, *, status: int, error_code: int | str | None, description: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.description = description


class ExotelItemFailed(Reject):
    """The request was accepted but this message's item says ``failure``."""

    code = "exotel_item_failed"

    def __init__(self, message: str, *, status: int | None, error_code: int | str | None,
                 description: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.description = description


@dataclass(frozen=True)
class ExotelConfig:
    """Where and how to call Exotel. ``api_token`` is never logged (``repr`` leaves it out)."""

    api_url: str
    account_sid: str
    api_key: str
    api_token: str
    from_number: str
    status_callback_url: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0

    def __repr__(self) -> str:
        return f"ExotelConfig(api_url={self.api_url!r}, account_sid={self.account_sid!r})"

    @classmethod
    def from_settings(cls, settings: Settings, *, status_callback_url: str | None = None) -> ExotelConfig:
        """Build from settings; raises ``ConfigurationError`` naming missing Exotel variables."""
        settings.require("EXOTEL_SID", "EXOTEL_API_KEY", "EXOTEL_TOKEN", "EXOTEL_WHATSAPP_NUMBER")
        assert settings.exotel_sid is not None
        assert settings.exotel_api_key is not None
        assert settings.exotel_token is not None
        assert settings.exotel_whatsapp_number is not None
        return cls(
            api_url=settings.exotel_api_url.rstrip("/"),
            account_sid=settings.exotel_sid,
            api_key=settings.exotel_api_key.get_secret_value(),
            api_token=settings.exotel_token.get_secret_value(),
            from_number=settings.exotel_whatsapp_number,
            status_callback_url=status_callback_url,
            connect_timeout_s=settings.exotel_connect_timeout_s,
            read_timeout_s=settings.exotel_read_timeout_s,
        )


@dataclass(frozen=True)
class OutboundMessage:
    """One message: recipient (E.164), Meta Cloud-API ``content``, and our correlation id."""

    to: str
    content: Mapping[str, Any]
    custom_data: str


@dataclass(frozen=True)
class ItemResult:
    """Exotel's result for one message, in request order. ``sid`` is set only on success."""

    ok: bool
    sid: str | None
    status: int | None
    error_code: int | str | None
    description: str | None
    raw: Mapping[str, Any]

    def raise_for_failure(self) -> str:
        """The sid, or ``ExotelItemFailed`` with Exotel's code and description."""
        if self.ok and self.sid:
            return self.sid
        raise ExotelItemFailed(
            f"Exotel refused the message: {self.error_code} {self.description}".strip(),
            status=self.status, error_code=self.error_code, description=self.description,
        )


# --- content builders ---------------------------------------------------------------------------------


def text_content(text: str) -> dict[str, Any]:
    """A text message."""
    return {"recipient_type": "individual", "type": "text", "text": {"preview_url": False, "body": text}}


def template_content(name: str, language: str, components: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A template message; the language goes as ``{code, policy: deterministic}`` as Exotel requires."""
    template: dict[str, Any] = {"name": name, "language": {"code": language, "policy": "deterministic"}}
    if components:
        template["components"] = [dict(c) for c in components]
    return {"recipient_type": "individual", "type": "template", "template": template}


def media_filename(url: str, default: str = "document") -> str:
    """The file name shown to the recipient: the last segment of the URL *path* only.

    Never the query string or fragment (a SAS token must not reach the recipient), percent-decoded.
    """
    name = posixpath.basename(unquote(urlsplit(url).path))
    name = name.replace("\\", "_").strip()
    return name or default


def media_content(url: str, media_type: str, caption: str | None) -> dict[str, Any]:
    """An image, document, audio or video message (audio takes no caption)."""
    media: dict[str, Any] = {"link": url}
    if caption and media_type != "audio":
        media["caption"] = caption
    if media_type == "document":
        media["filename"] = media_filename(url)
    return {"recipient_type": "individual", "type": media_type, media_type: media}


# --- the client ---------------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class ExotelClient:
    """Sends WhatsApp messages through Exotel with a session passed in."""

    def __init__(self, session: requests.Session, config: ExotelConfig) -> None:
        self._session = session
        self._config = config
        credentials = f"{config.api_key}:{config.api_token}".encode()
        # Basic auth in a header, never in the URL, so credentials stay out of logs and proxies.
        self._auth_header = "Basic " + base64.b64encode(credentials).decode()
        self._url = f"{config.api_url}/v2/accounts/{config.account_sid}/messages"

    @property
    def config(self) -> ExotelConfig:
        """The configuration (without secrets in its repr)."""
        return self._config

    def send_one(self, message: OutboundMessage) -> tuple[str, ItemResult]:
        """Send one message; returns its sid and Exotel's item. Raises the errors in the module docstring."""
        item = self.send([message])[0]
        return item.raise_for_failure(), item

    def send(self, messages: Sequence[OutboundMessage]) -> list[ItemResult]:
        """Send 1-100 messages in one request; one result per message, in order.

        A failed item does not raise: check ``ItemResult.ok``. Request-level failures raise.
        """
        if not 1 <= len(messages) <= MAX_MESSAGES_PER_REQUEST:
            raise ValueError(f"send 1-{MAX_MESSAGES_PER_REQUEST} messages per request, not {len(messages)}")
        body = {"whatsapp": {"messages": [self._message(m) for m in messages]}}
        response = self._post(body)
        return self._items(response, len(messages))

    def _message(self, message: OutboundMessage) -> dict[str, Any]:
        item: dict[str, Any] = {
            "from": self._config.from_number,
            "to": message.to,
            "content": dict(message.content),
            # Our message id comes back in every DLR: the one correlation handle Exotel offers.
            "custom_data": message.custom_data,
        }
        if self._config.status_callback_url:
            item["status_callback"] = self._config.status_callback_url
        return item

    def _post(self, body: Mapping[str, Any]) -> requests.Response:
        timeout = (self._config.connect_timeout_s, self._config.read_timeout_s)
        headers = {"Authorization": self._auth_header, "Accept": "application/json"}
        try:
            response = self._session.post(self._url, json=body, headers=headers, timeout=timeout)
        except requests.ConnectTimeout as exc:
            raise ExotelUnavailable("Exotel connect timeout") from exc
        except requests.ConnectionError as exc:
            if _never_connected(exc):
                raise ExotelUnavailable("could not connect to Exotel") from exc
            raise ExotelOutcomeUnknown("connection to Exotel lost after sending") from exc
        except requests.Timeout as exc:
            raise ExotelOutcomeUnknown("Exotel read timeout: the message may have been sent") from exc
        except requests.RequestException as exc:
            raise ExotelOutcomeUnknown(f"request to Exotel failed: {type(exc).__name__}") from exc
        self._raise_for_status(response)
        return response

    @staticmethod
    def _raise_for_status(response: requests.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        retry_after_s = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429:
            raise ExotelRateLimited(f"Exotel rate limit (429), retry after {retry_after_s}s",
                                    retry_after_s=retry_after_s)
        if status >= 500:
            raise ExotelUnavailable(f"Exotel answered {status}", retry_after_s=retry_after_s)
        error_code, description = _error_details(response)
        raise ExotelRejected(
            f"Exotel rejected the request: HTTP {status} {error_code} {description}".strip(),
            status=status, error_code=error_code, description=description,
        )

    @staticmethod
    def _items(response: requests.Response, expected: int) -> list[ItemResult]:
        try:
            items = response.json()["response"]["whatsapp"]["messages"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ExotelOutcomeUnknown(f"Exotel answered {response.status_code} without per-message results") from exc
        if not isinstance(items, list) or len(items) != expected:
            raise ExotelOutcomeUnknown(f"Exotel answered {len(items) if isinstance(items, list) else 0} results "
                                       f"for {expected} messages")
        return [_item(item) for item in items]


def _item(item: Any) -> ItemResult:
    if not isinstance(item, dict):
        return ItemResult(False, None, None, None, "malformed result", {})
    data = item.get("data")
    sid = data.get("sid") if isinstance(data, dict) else None
    error_data = item.get("error_data")
    error: dict[str, Any] = error_data if isinstance(error_data, dict) else {}
    ok = item.get("status") == "success" and isinstance(sid, str) and bool(sid)
    description = error.get("description") or error.get("message")
    return ItemResult(
        ok=ok,
        sid=sid if ok else None,
        status=item.get("code") if isinstance(item.get("code"), int) else None,
        error_code=error.get("code"),
        description=str(description)[:_MAX_DESCRIPTION_CHARS] if description else None,
        raw=item,
    )


def _error_details(response: requests.Response) -> tuple[int | str | None, str | None]:
    """Exotel's error code and description from a v2 envelope (object or list) or a v1 RestException."""
    try:
        body = response.json()
    except ValueError:
        return None, (response.text or "")[:_MAX_DESCRIPTION_CHARS] or None
    if not isinstance(body, dict):
        return None, None
    if isinstance(body.get("RestException"), dict):
        rest = body["RestException"]
        return rest.get("Code"), str(rest.get("Message") or "")[:_MAX_DESCRIPTION_CHARS] or None
    inner = body.get("response")
    if isinstance(inner, dict) and isinstance(inner.get("whatsapp"), dict):
        messages = inner["whatsapp"].get("messages")
        inner = messages[0] if isinstance(messages, list) and messages else None
    elif isinstance(inner, list) and inner:
        inner = inner[0]
    error = inner.get("error_data") if isinstance(inner, dict) else None
    if not isinstance(error, dict):
        return None, None
    description = error.get("description") or error.get("message")
    return error.get("code"), str(description)[:_MAX_DESCRIPTION_CHARS] if description else None


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the TCP connection was never made (refused, DNS): the request cannot have been sent."""
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 10:
        text = type(cause).__name__
        if text in ("NewConnectionError", "NameResolutionError", "ConnectionRefusedError"):
            return True
        reason = getattr(cause, "reason", None)
        cause = reason if isinstance(reason, BaseException) else (cause.__cause__ or cause.__context__)
        seen += 1
    return False
