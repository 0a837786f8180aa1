"""HTTP triggers on ``/<routePrefix>/<route>`` with methods, route parameters and auth levels.

Keys (local only; the real host keeps keys in its secret store, and ``func start`` does not check them):
``DEVHOST_FUNCTION_KEY`` opens FUNCTION-level routes, ``DEVHOST_MASTER_KEY`` opens every route and the
admin endpoints. A key is passed as the ``x-functions-key`` header or the ``code`` query parameter; a missing
or wrong key answers 401. Also: ``GET /admin/host/status`` (anonymous, for readiness checks) and
``POST /admin/functions/<name>`` with the master key to run a non-HTTP function now (as the host's admin API).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from devhost.index import FunctionSpec
from devhost.invoker import Invoker

__all__ = ["FUNCTION_KEY_SETTING", "MASTER_KEY_SETTING", "HttpRoute", "LocalHttpServer", "compile_route"]

logger = logging.getLogger(__name__)

FUNCTION_KEY_SETTING = "DEVHOST_FUNCTION_KEY"
MASTER_KEY_SETTING = "DEVHOST_MASTER_KEY"
_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]+)?(\??)\}")
_MAX_BODY_BYTES = 100 * 1024 * 1024  # the host's default request size limit


def compile_route(template: str) -> re.Pattern[str]:
    """A regex for a route template: ``{id}``, ``{id:int}`` (constraints not checked), ``{id?}``, ``{*rest}``."""
    pattern = ""
    position = 0
    for match in _PARAM.finditer(template):
        pattern += re.escape(template[position : match.start()])
        catch_all, name, optional = match.groups()
        body = ".*" if catch_all else "[^/]+"
        if optional and pattern.endswith("/"):
            pattern = pattern[:-1] + f"(?:/(?P<{name}>{body}))?"
        else:
            pattern += f"(?P<{name}>{body})" + ("?" if optional else "")
        position = match.end()
    pattern += re.escape(template[position:])
    return re.compile(f"^{pattern}/?$", re.IGNORECASE)


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP-triggered function: its compiled route, methods (None = any) and auth level."""

    spec: FunctionSpec
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    auth_level: str
    disabled: bool = False


class LocalHttpServer:
    """A ThreadingHTTPServer dispatching to HTTP-triggered functions."""

    def __init__(
        self,
        routes: list[HttpRoute],
        invoker: Invoker,
        *,
        route_prefix: str,
        keys: dict[str, str | None],
        admin_invoke: Callable[[str, str | None], bool | None],
        host: str = "127.0.0.1",
        port: int = 7071,
    ) -> None:
        self._routes = routes
        self._invoker = invoker
        self._prefix = f"/{route_prefix}" if route_prefix else ""
        self._function_key = keys.get("function")
        self._master_key = keys.get("master")
        self._admin_invoke = admin_invoke
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="devhost-http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- request handling ------------------------------------------------------------------------
    def _authorized(self, level: str, key: str | None) -> bool:
        level = level.upper()
        if level == "ANONYMOUS":
            return True
        allowed = [self._master_key] if level == "ADMIN" else [self._function_key, self._master_key]
        return key is not None and any(k and hmac.compare_digest(k, key) for k in allowed)

    def handle(  # noqa: PLR0911 - one return per routing outcome reads best
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Route one request; returns status, headers and body."""
        parts = urlsplit(raw_path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        key = next((v for k, v in headers.items() if k.lower() == "x-functions-key"), None) or params.get("code")
        path = parts.path
        if path.rstrip("/") == "/admin/host/status" and method == "GET":
            return 200, {"Content-Type": "application/json"}, b'{"state":"Running"}'
        if path.startswith("/admin/functions/") and method == "POST":
            return self._admin(path.rsplit("/", 1)[-1], key, body)
        if not path.lower().startswith(self._prefix.lower() + "/"):
            return 404, {}, b""
        relative = path[len(self._prefix) + 1 :]
        for route in self._routes:
            match = route.pattern.match(relative)
            if not match:
                continue
            if route.disabled:
                return 404, {}, b""
            if route.methods is not None and method not in route.methods:
                continue
            if not self._authorized(route.auth_level, key):
                return 401, {}, b""
            route_params = {k: v for k, v in match.groupdict().items() if v is not None}
            request = func.HttpRequest(
                method,
                f"http://{headers.get('Host', 'localhost')}{raw_path}",
                headers=headers,
                params=params,
                route_params=route_params,
                body=body,
            )
            return self._call(route.spec, request)
        return 404, {}, b""

    def _admin(self, name: str, key: str | None, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if not self._authorized("ADMIN", key):
            return 401, {}, b""
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return 400, {}, b""
        result = self._admin_invoke(name, payload.get("input") if isinstance(payload, dict) else None)
        if result is None:
            return 404, {}, b""
        return 202, {}, b""

    def _call(self, spec: FunctionSpec, request: func.HttpRequest) -> tuple[int, dict[str, str], bytes]:
        try:
            result: Any = self._invoker.invoke(spec, {spec.trigger["name"]: request}).result()
        except Exception:
            logger.exception("Executed 'Functions.%s' (Failed)", spec.name)
            return 500, {}, b""
        logger.info("Executed 'Functions.%s' (Succeeded)", spec.name)
        if isinstance(result, func.HttpResponse):
            headers = dict(result.headers.items())
            if result.mimetype and not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = (
                    f"{result.mimetype}; charset={result.charset}" if result.charset else result.mimetype
                )
            return result.status_code, headers, result.get_body()
        if result is None:
            return 204, {}, b""
        text = result if isinstance(result, bytes) else str(result).encode("utf-8")
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, text

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > _MAX_BODY_BYTES:
                    self.send_error(413)
                    return
                body = self.rfile.read(length) if length else b""
                status, headers, payload = server.handle(self.command, self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                logger.debug("%s - %s", self.address_string(), format % args)

        return Handler
