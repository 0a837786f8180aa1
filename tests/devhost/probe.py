"""Shared state between the test FunctionApp (tests/devhost/app) and the tests that drive it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PROBE", "Probe"]


@dataclass
class Probe:
    """Thread-safe record of invocations and of how many ran at once."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forget everything (each test starts clean)."""
        with self.lock:
            self.calls.clear()
            self.running = 0
            self.max_running = 0

    def enter(self, **call: Any) -> None:
        """Record the start of an invocation."""
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls.append({"started": time.monotonic(), **call})

    def leave(self) -> None:
        """Record the end of an invocation."""
        with self.lock:
            self.running -= 1

    def of(self, function: str) -> list[dict[str, Any]]:
        """Calls of one function, in start order."""
        with self.lock:
            return [c for c in self.calls if c["function"] == function]

    def wait_for(self, function: str, count: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """Wait until ``function`` has been called ``count`` times; fail with what was seen."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            calls = self.of(function)
            if len(calls) >= count:
                return calls
            time.sleep(0.05)
        raise AssertionError(f"{function}: expected {count} calls within {timeout_s}s, saw {self.of(function)}")


PROBE = Probe()
