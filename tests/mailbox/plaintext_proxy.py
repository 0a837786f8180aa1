"""A TCP relay to the local Dovecot's plain IMAP port that hides STARTTLS, so it looks like a server without
TLS, and records every byte the client sent (to prove whether a password went over the wire)."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

__all__ = ["StartTlsHidingProxy"]


class StartTlsHidingProxy:
    """Listens on 127.0.0.1 (``port``); each connection is relayed to ``upstream_host:upstream_port`` with the
    ``STARTTLS`` capability removed from the server's lines. ``received`` holds what clients sent."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._received = bytearray()
        self._sockets: list[socket.socket] = []
        self._closed = False

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return int(self._listener.getsockname()[1])

    @property
    def received(self) -> bytes:
        """Every byte clients sent so far."""
        with self._lock:
            return bytes(self._received)

    def __enter__(self) -> StartTlsHidingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream, timeout=5)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._to_server, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._to_client, args=(upstream, client), daemon=True).start()

    def _to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    self._received += data
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    @staticmethod
    def _to_client(upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError), upstream.makefile("rb") as lines:
            for line in lines:
                client.sendall(line.replace(b" STARTTLS", b""))
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
