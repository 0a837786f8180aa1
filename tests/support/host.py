"""pytest plugin: the local Functions host (``devhost``) for end-to-end tests.

Register with ``pytest_plugins = ["tests.support.services", "tests.support.host"]``.

- ``local_host(functions=[...], settings={...}, script_root=REPO_ROOT)`` starts the host *in-process* on a
  free port with only the listed functions enabled and returns the started ``LocalHost`` (``.base_url``,
  ``.queue_listeners`` ...). Settings act like environment variables; the environment is restored and the
  host stopped after the test. ``AzureWebJobsStorage`` defaults to the services' Azurite.
- ``local_host_process(...)`` does the same with ``python -m devhost`` in a subprocess (for tests that need
  a separate process, e.g. signal handling); it is stopped with SIGTERM and its log is in ``.log_path``.
- ``enqueue(queue_name, body)`` puts a message on a queue as the main API would (base64, like host.json).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueServiceClient

from devhost import HostOptions, LocalHost

__all__ = ["REPO_ROOT", "HostProcess", "enqueue", "local_host", "local_host_process"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def local_host(storage_connection_string: str, tmp_path: Path) -> Iterator[Callable[..., LocalHost]]:
    """Factory starting the local host in-process; every host it started is stopped after the test."""
    started: list[LocalHost] = []

    def start(
        functions: list[str] | None = None,
        settings: Mapping[str, str] | None = None,
        *,
        script_root: Path = REPO_ROOT,
        settings_file: Path | None = None,
        lease_s: int | None = None,
        grace_s: float = 10.0,
    ) -> LocalHost:
        merged = {"AzureWebJobsStorage": storage_connection_string, **(settings or {})}
        options = HostOptions(
            script_root=script_root,
            settings_file=settings_file or tmp_path / "no-local.settings.json",
            functions=functions,
            settings=merged,
            port=0,
            grace_s=grace_s,
            restore_environment=True,
        )
        if lease_s is not None:
            options.lease_s = lease_s
        host = LocalHost(options)
        started.append(host)
        host.start()
        return host

    yield start
    for host in reversed(started):
        host.stop()


@dataclass
class HostProcess:
    """A ``python -m devhost`` subprocess."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        """Everything the host has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Signal the host and wait for it to exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def _wait_ready(host: HostProcess) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise AssertionError(f"devhost exited with {host.process.returncode}:\n{host.log()}")
        try:
            with urllib.request.urlopen(f"{host.base_url}/admin/host/status", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"devhost did not answer within {_START_TIMEOUT_S}s:\n{host.log()}")


@pytest.fixture
def local_host_process(storage_connection_string: str, tmp_path: Path) -> Iterator[Callable[..., HostProcess]]:
    """Factory starting ``python -m devhost`` as a subprocess; each is stopped (SIGTERM) after the test."""
    started: list[HostProcess] = []

    def start(
        functions: list[str] | None = None,
        settings: Mapping[str, str] | None = None,
        script_root: Path = REPO_ROOT,
        settings_file: Path | None = None,
    ) -> HostProcess:
        port = _free_port()
        env = {**os.environ, "AzureWebJobsStorage": storage_connection_string, **(settings or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        args = [sys.executable, "-m", "devhost", "--port", str(port), "--script-root", str(script_root)]
        args += ["--settings", str(settings_file or tmp_path / "no-local.settings.json")]
        if functions is not None:
            args += ["--functions", ",".join(functions)]
        log_path = tmp_path / f"devhost-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        host = HostProcess(process, f"http://127.0.0.1:{port}", log_path)
        started.append(host)
        _wait_ready(host)
        return host

    yield start
    for host in reversed(started):
        host.stop()


def enqueue(service: QueueServiceClient, queue_name: str, body: str | bytes, **kwargs: Any) -> str:
    """Send ``body`` base64-encoded (host.json ``messageEncoding``) to ``queue_name``; returns the message id."""
    client = service.get_queue_client(queue_name)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return str(client.send_message(base64.b64encode(raw).decode("ascii"), **kwargs).id)
