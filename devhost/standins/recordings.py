"""A stand-in for Exotel's recording host: private recordings behind HTTP Basic auth, real audio.

Since 8 Oct 2024 Exotel recording URLs are private: without the account's API key and token the server
answers 401 (external-apis.md §1.7). This server does the same for every route below, then serves:

- ``/exotelrecordings/<account>/<name>.<wav|mp3|ogg|flac>`` — audio generated locally with PyAV; the
  duration comes from ``?duration_s=`` (default 30) or a file registered with ``add_file``;
- ``/redirect?to=<url>`` — a 302 to any URL (for testing redirect checks); without ``to``, to itself;
- ``/status/<code>`` — that status, with ``Retry-After`` from ``?retry_after=``;
- ``/huge`` — declares ``Content-Length`` 5 GB and streams zeros until the client hangs up;
- ``/endless`` — chunked, no length, streams zeros until the client hangs up.

``bytes_sent`` records how much each streaming route actually sent, so tests can prove a client stopped early.

Run: ``python -m devhost.standins.recordings --port 18090 --user KEY --password TOKEN``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import logging
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devhost.standins import serve_until_stopped, serving_in_thread
from devhost.standins.audio import generate_recording

__all__ = ["RecordingServer", "main", "running_recording_server"]

log = logging.getLogger(__name__)

_CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}
_RECORDING = re.compile(r"^/exotelrecordings/[^/]+/(?P<name>[^/]+)\.(?P<ext>wav|mp3|ogg|flac)$")
FIVE_GB = 5 * 1024**3


class RecordingServer(ThreadingHTTPServer):
    """The server; tests read ``url``, ``requests`` and ``bytes_sent``."""

    daemon_threads = True

    def __init__(self, port: int = 0, *, user: str = "exotel-key", password: str = "exotel-token",  # noqa: S107 - a stand-in's test credential
                 cache_dir: Path | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.user, self.password = user, password
        self._own_cache = cache_dir is None
        self.cache_dir = cache_dir or Path(tempfile.mkdtemp(prefix="recording-standin-"))
        self.files: dict[str, Path] = {}
        self.requests: list[dict[str, Any]] = []
        self.bytes_sent: dict[str, int] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add_file(self, path: str, file: Path) -> str:
        """Serve ``file`` at ``path`` (behind Basic auth); returns the full URL."""
        self.files[path] = file
        return self.url + path

    def recording_url(self, name: str, *, duration_s: int = 30, fmt: str = "wav") -> str:
        """URL of a generated recording (Exotel's path shape)."""
        return f"{self.url}/exotelrecordings/ACCOUNT/{name}.{fmt}?duration_s={duration_s}"

    def audio_file(self, name: str, ext: str, duration_s: int) -> Path:
        path = self.cache_dir / f"{name}-{duration_s}s.{ext}"
        with self.lock:
            if not path.exists():
                tmp = path.with_suffix(f".part.{ext}")
                generate_recording(tmp, duration_s, fmt=ext, sample_rate=16000 if ext == "ogg" else 8000)
                tmp.rename(path)
        return path

    def server_close(self) -> None:
        super().server_close()
        if self._own_cache:
            for child in self.cache_dir.glob("*"):
                child.unlink(missing_ok=True)
            self.cache_dir.rmdir()


class _Handler(BaseHTTPRequestHandler):
    server: RecordingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("recordings: %s", format % args)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        authorised = self._authorised()
        with self.server.lock:
            self.server.requests.append({"path": parts.path, "host": self.headers.get("Host"),
                                         "authorised": authorised})
        if not authorised:
            self._send(401, b'{"status":401,"message":"Authentication is required to access this recording"}',
                       "application/json", {"WWW-Authenticate": 'Basic realm="Exotel"'})
            return
        if parts.path == "/redirect":
            self._send(302, b"", "text/plain", {"Location": query.get("to", "/redirect")})
        elif parts.path.startswith("/status/"):
            extra = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
            self._send(int(parts.path.rsplit("/", 1)[1]), b"{}", "application/json", extra)
        elif parts.path == "/huge":
            self._stream("huge", declared=FIVE_GB)
        elif parts.path == "/endless":
            self._stream("endless", declared=None)
        elif parts.path in self.server.files:
            self._send_file(self.server.files[parts.path], "application/octet-stream")
        elif match := _RECORDING.match(parts.path):
            ext = match["ext"]
            path = self.server.audio_file(match["name"], ext, int(query.get("duration_s", "30")))
            self._send_file(path, _CONTENT_TYPES[ext])
        else:
            self._send(404, b'{"status":404,"message":"Recording not found"}', "application/json")

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.server.user) and hmac.compare_digest(password, self.server.password)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, path: Path, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with path.open("rb") as source:
            while chunk := source.read(256 * 1024):
                try:
                    self.wfile.write(chunk)
                except OSError:
                    return

    def _stream(self, name: str, *, declared: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        if declared is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(declared))
        self.end_headers()
        block, sent = b"\0" * 65536, 0
        try:
            while declared is None or sent < declared:
                if declared is None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                else:
                    self.wfile.write(block)
                sent += len(block)
                with self.server.lock:
                    self.server.bytes_sent[name] = sent
        except OSError:
            self.close_connection = True


@contextmanager
def running_recording_server(**kwargs: Any) -> Iterator[RecordingServer]:
    """Start an ``RecordingServer`` on a free port in a thread; shut it down afterwards."""
    server = RecordingServer(**kwargs)
    with serving_in_thread(server, "recording-standin"):
        yield server


def main(argv: list[str] | None = None) -> None:
    """Command line: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--user", default="exotel-key")
    parser.add_argument("--password", default="exotel-token")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = RecordingServer(args.port, user=args.user, password=args.password)
    log.info("recording stand-in on %s", server.url)
    serve_until_stopped(server)


if __name__ == "__main__":
    main()
