"""A local stand-in for Exotel's WhatsApp send API (``POST /v2/accounts/<sid>/messages``).

Development tooling for tests, benches and local runs; it follows Exotel's documented behaviour
(/work/shared/reference/external-apis.md §1):

- HTTP Basic auth (``api_key:api_token``); a mismatch answers 401 with the v2 error envelope;
- a ``{"whatsapp": {"messages": [...]}}`` body of 1-100 messages, each with ``from``, ``to``, ``content.type``;
- 202 with one result per message in request order (``data.sid`` = 32 hex); when some items fail
  (``fail_recipients``, or an item missing a field) the envelope says 207 and the item carries
  ``status: failure`` and ``error_data``;
- 429 with ``Retry-After`` and the ``RestException`` body when over a configured rate (sliding window or
  token bucket);
- injectable 5xx answers and slow answers;
- every request is recorded with its arrival time (monotonic and wall clock) for benches;
- DLR callbacks (``callback_type: dlr``) POSTed to ``status_callback``, echoing ``custom_data``.

Run it: ``python -m devhost.standins.exotel --port 8088 --rate 10 --window-s 1``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import hmac
import json
import logging
import math
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from devhost.standins import serve_until_stopped

__all__ = ["DLR_STATUS_CODES", "ExotelStandin", "RateLimit", "RecordedRequest", "main"]

logger = logging.getLogger(__name__)

#: exo_detailed_status → exo_status_code (the legacy table, which matches the strings seen in the wild).
DLR_STATUS_CODES = {
    "EX_MESSAGE_SENT": 30001,
    "EX_MESSAGE_DELIVERED": 30002,
    "EX_MESSAGE_SEEN": 30003,
    "EX_SYSTEM_ERROR": 30004,
    "EX_INVALID_RECIPIENT": 30012,
    "EX_REENGAGEMENT_ERROR": 30018,
}
_MAX_MESSAGES = 100
_MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RateLimit:
    """``limit`` requests per ``window_s``; ``sliding`` counts a rolling window, ``token_bucket`` refills
    ``limit / window_s`` tokens per second up to ``limit``."""

    limit: int
    window_s: float
    mode: Literal["sliding", "token_bucket"] = "sliding"
    retry_after_s: int | None = None  # None: the time until a request would be admitted (rounded up)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived; ``status`` is what the stand-in answered."""

    arrived_monotonic_s: float
    arrived_wall: datetime
    method: str
    path: str
    authorized: bool
    body: Any
    status: int
    sids: tuple[str, ...] = ()


@dataclass
class _Accepted:
    sid: str
    to: str
    custom_data: str | None
    status_callback: str | None


@dataclass
class _Limiter:
    rule: RateLimit
    admitted: collections.deque[float] = field(default_factory=collections.deque)
    tokens: float = 0.0
    refilled_at: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = float(self.rule.limit)
        self.refilled_at = time.monotonic()

    def admit(self, now: float) -> float | None:
        """None when admitted, else the seconds until a request would be."""
        if self.rule.mode == "sliding":
            while self.admitted and self.admitted[0] <= now - self.rule.window_s:
                self.admitted.popleft()
            if len(self.admitted) >= self.rule.limit:
                return self.admitted[0] + self.rule.window_s - now
            self.admitted.append(now)
            return None
        rate = self.rule.limit / self.rule.window_s
        self.tokens = min(float(self.rule.limit), self.tokens + (now - self.refilled_at) * rate)
        self.refilled_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / rate


class ExotelStandin:
    """The stand-in server. ``start()`` serves on 127.0.0.1 in a thread; use as a context manager in tests.

    Failure injection (thread-safe; set before or while requests arrive):
    ``fail_next(count, status)`` answers the next ``count`` sends with a 5xx (or any status);
    ``fail_recipients[to] = (http_code, error_code, description)`` fails that recipient's items;
    ``delay_s`` sleeps before answering; ``rate_limit`` throttles with 429.
    """

    def __init__(
        self,
        *,
        account_sid: str = "banxway-test",
        api_key: str = "test-key",
        api_token: str = "test-token",  # noqa: S107 - a stand-in's fixed test credential
        rate_limit: RateLimit | None = None,
        port: int = 0,
        auto_dlr: tuple[str, ...] = (),
    ) -> None:
        self.account_sid = account_sid
        self.api_key = api_key
        self.api_token = api_token
        self.rate_limit = rate_limit
        self.delay_s = 0.0
        self.fail_recipients: dict[str, tuple[int, int, str]] = {}
        #: DLR statuses POSTed (in a thread) after each accepted message, e.g. ("EX_MESSAGE_SENT",).
        self.auto_dlr = auto_dlr
        self.requests: list[RecordedRequest] = []
        self.accepted: dict[str, _Accepted] = {}
        self._lock = threading.Lock()
        self._failures: collections.deque[int] = collections.deque()
        self._limiter = _Limiter(rate_limit) if rate_limit else None
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle
    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:<port>``), i.e. what EXOTEL_API_URL should be."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ExotelStandin:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="exotel-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> ExotelStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control
    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` send requests with ``status`` (after auth)."""
        with self._lock:
            self._failures.extend([status] * count)

    def set_rate_limit(self, rule: RateLimit | None) -> None:
        """Replace the rate limit (None: unlimited); its state starts fresh."""
        with self._lock:
            self.rate_limit = rule
            self._limiter = _Limiter(rule) if rule else None

    def sends(self) -> list[RecordedRequest]:
        """Recorded requests to the messages endpoint, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path.endswith("/messages")]

    def accepted_sids(self) -> list[str]:
        """Every sid the stand-in issued, in order."""
        with self._lock:
            return list(self.accepted)

    def send_dlr(
        self, sid: str, detailed_status: str = "EX_MESSAGE_DELIVERED", *, url: str | None = None, timeout_s: float = 5
    ) -> int:
        """POST a DLR callback for ``sid`` to its ``status_callback`` (or ``url``); returns the HTTP status."""
        with self._lock:
            message = self.accepted[sid]
        target = url or message.status_callback
        if not target:
            raise ValueError(f"message {sid} has no status_callback")
        body = {"whatsapp": {"messages": [dlr_item(sid, message.to, detailed_status, message.custom_data)]}}
        request = urllib.request.Request(  # noqa: S310 - the URL is the caller's own callback
            target, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    # --- request handling (called from handler threads)
    def _admit(self, now: float) -> tuple[int | None, float]:
        # ``now`` is the request's recorded arrival, so the 429s agree with the arrival times it reports.
        with self._lock:
            if self._limiter is not None:
                wait_s = self._limiter.admit(now)
                if wait_s is not None:
                    return 429, wait_s
            if self._failures:
                return self._failures.popleft(), 0.0
        return None, 0.0

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(record)

    def _accept(self, accepted: list[_Accepted]) -> None:
        with self._lock:
            for item in accepted:
                self.accepted[item.sid] = item
        for item in accepted:
            if self.auto_dlr and item.status_callback:
                threading.Thread(target=self._post_dlrs, args=(item.sid,), daemon=True).start()

    def _post_dlrs(self, sid: str) -> None:
        for status in self.auto_dlr:
            try:
                self.send_dlr(sid, status)
            except OSError as exc:
                logger.warning("DLR callback for %s failed: %s", sid, exc)


def dlr_item(sid: str, to: str, detailed_status: str, custom_data: str | None) -> dict[str, Any]:
    """One DLR item as Exotel posts it inside ``whatsapp.messages[]``."""
    item: dict[str, Any] = {
        "callback_type": "dlr",
        "sid": sid,
        "to": to.lstrip("+"),
        "exo_status_code": DLR_STATUS_CODES.get(detailed_status, 30011),
        "exo_detailed_status": detailed_status,
        "description": detailed_status.removeprefix("EX_").replace("_", " ").lower(),
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    if custom_data is not None:
        item["custom_data"] = custom_data
    return item


def _envelope(http_code: int, response: Any, metadata: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"request_id": uuid.uuid4().hex, "method": "POST", "http_code": http_code}
    if metadata is not None:
        body["metadata"] = metadata
    body["response"] = response
    return body


def _request_error(http_code: int, code: int, message: str, description: str) -> dict[str, Any]:
    error = {"code": code, "message": message, "description": description}
    return _envelope(http_code, {"code": http_code, "error_data": error, "status": "failure", "data": None})


def _item_failure(http_code: int, code: int, description: str) -> dict[str, Any]:
    return {
        "code": http_code,
        "error_data": {"code": code, "message": "Invalid parameter", "description": description},
        "status": "failure",
        "data": None,
    }


def _item_problem(message: Any) -> str | None:
    if not isinstance(message, dict):
        return "message must be an object"
    for name in ("from", "to"):
        if not isinstance(message.get(name), str) or not message[name]:
            return f"{name} is required"
    content = message.get("content")
    if not isinstance(content, dict) or not isinstance(content.get("type"), str):
        return "content.type is required"
    return None


def _handler_class(standin: ExotelStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            logger.debug("exotel stand-in: %s", format % args)

        def do_POST(self) -> None:
            arrived_mono, arrived_wall = time.monotonic(), datetime.now(UTC)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(min(length, _MAX_BODY_BYTES)) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = None
            authorized = self._authorized()
            status, payload, headers, sids = self._answer(body, authorized, arrived_mono)
            standin._record(
                RecordedRequest(arrived_mono, arrived_wall, "POST", self.path, authorized, body, status, sids)
            )
            if standin.delay_s:
                time.sleep(standin.delay_s)
            self._send(status, payload, headers)

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return hmac.compare_digest(user, standin.api_key) & hmac.compare_digest(password, standin.api_token)

        def _answer(
            self, body: Any, authorized: bool, arrived_mono: float
        ) -> tuple[int, dict[str, Any], dict[str, str], tuple[str, ...]]:
            if self.path.split("?")[0] != f"/v2/accounts/{standin.account_sid}/messages":
                return 404, _request_error(404, 1004, "Not found", "no such resource"), {}, ()
            if not authorized:
                return 401, _request_error(401, 1010, "Authorization failed", "invalid API key or token"), {}, ()
            status, wait_s = standin._admit(arrived_mono)
            if status == 429:
                retry_after = standin.rate_limit.retry_after_s if standin.rate_limit else None
                seconds = retry_after if retry_after is not None else max(1, math.ceil(wait_s))
                rest = {"RestException": {"Status": 429, "Message": "Rate limit exceeded. Retry after some time.",
                                          "Code": "RATE_LIMIT_EXCEEDED"}}
                return 429, rest, {"Retry-After": str(seconds)}, ()
            if status is not None:
                return status, _request_error(status, 1500, "Internal error", "injected server error"), {}, ()
            messages = (body or {}).get("whatsapp", {}).get("messages") if isinstance(body, dict) else None
            if not isinstance(messages, list) or not 1 <= len(messages) <= _MAX_MESSAGES:
                return 400, _request_error(
                    400, 1002, "Invalid parameter", f"whatsapp.messages must hold 1-{_MAX_MESSAGES} messages"
                ), {}, ()
            return self._results(body, messages)

        def _results(
            self, body: dict[str, Any], messages: list[Any]
        ) -> tuple[int, dict[str, Any], dict[str, str], tuple[str, ...]]:
            results, accepted = [], []
            for message in messages:
                problem = _item_problem(message)
                failure = standin.fail_recipients.get(message.get("to", "")) if problem is None else None
                if problem is not None:
                    results.append(_item_failure(400, 1002, problem))
                elif failure is not None:
                    results.append(_item_failure(*failure))
                else:
                    sid = uuid.uuid4().hex
                    results.append({"code": 202, "error_data": None, "status": "success", "data": {"sid": sid}})
                    accepted.append(_Accepted(
                        sid, message["to"],
                        message.get("custom_data", body["whatsapp"].get("custom_data", body.get("custom_data"))),
                        message.get("status_callback",
                                    body["whatsapp"].get("status_callback", body.get("status_callback"))),
                    ))
            standin._accept(accepted)
            failed = len(results) - len(accepted)
            http_code = 207 if failed else 202
            metadata = {"failed": failed, "total": len(results), "success": len(accepted)}
            payload = _envelope(http_code, {"whatsapp": {"messages": results}}, metadata)
            return http_code, payload, {}, tuple(a.sid for a in accepted)

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (read timeout): as Exotel
                logger.debug("exotel stand-in: client went away before the answer")

    return Handler


def sliding_window_counts(times_s: list[float], window_s: float = 1.0) -> Iterator[int]:
    """For each request, how many requests arrived in the ``window_s`` starting at it (half-open window)."""
    ordered = sorted(times_s)
    end = 0
    for start, t in enumerate(ordered):
        while end < len(ordered) and ordered[end] < t + window_s:
            end += 1
        yield end - start


def main(argv: list[str] | None = None) -> None:
    """Serve the stand-in until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--account-sid", default="banxway-test")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--api-token", default="test-token")
    parser.add_argument("--rate", type=int, default=0, help="requests per window (0: unlimited)")
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--mode", choices=("sliding", "token_bucket"), default="sliding")
    parser.add_argument("--dlr", action="append", default=[], help="auto DLR statuses, e.g. EX_MESSAGE_DELIVERED")
    parser.add_argument("--verbose", action="store_true", help="log every request line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.verbose:
        logger.setLevel(logging.DEBUG)
    rule = RateLimit(args.rate, args.window_s, args.mode) if args.rate else None
    standin = ExotelStandin(
        account_sid=args.account_sid, api_key=args.api_key, api_token=args.api_token, rate_limit=rule,
        port=args.port, auto_dlr=tuple(args.dlr),
    )
    logger.info("Exotel stand-in on %s", standin.url)
    serve_until_stopped(standin._server)


if __name__ == "__main__":
    main()
