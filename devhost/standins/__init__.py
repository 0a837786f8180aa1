"""Local stand-ins for third-party SaaS (Exotel, OpenAI, the recording server): tests and local runs."""

from __future__ import annotations

import signal
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["serve_until_stopped", "serving_in_thread"]


@contextmanager
def serving_in_thread(server: socketserver.BaseServer, name: str) -> Iterator[None]:
    """Serve ``server`` in a daemon thread for the ``with`` block; shut it down and close it afterwards."""
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_until_stopped(server: socketserver.BaseServer) -> None:
    """Serve in the foreground until SIGTERM or Ctrl-C, then close the socket (command-line stand-ins).

    SIGTERM (how scripts/run-local.sh stops a stand-in) ends serving like Ctrl-C, so the socket and any
    temporary files are closed. SIGINT keeps its inherited handling (ignored in a background job).
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
