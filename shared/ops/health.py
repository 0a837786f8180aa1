"""Readiness: Redis, the storage queues and the database, each checked with its timing.

``readiness(deps)`` runs the checks in parallel, each bounded by ``timeout_s``, and returns the HTTP status
(200 when every check is up, 503 otherwise) and a JSON-able body::

    {"status": "ready", "checks": {"redis": {"status": "up", "duration_ms": 0.8}, ...}}

A failed check names the error class and a short, redacted message; the route is keyed (FUNCTION auth).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

from shared.ops.queue_stats import worker_queues
from shared.redaction import redact

if TYPE_CHECKING:
    from shared.deps import Deps

__all__ = ["CheckResult", "readiness", "run_checks"]

_MAX_ERROR_CHARS = 200


@dataclass(frozen=True)
class CheckResult:
    """One dependency: up or down, how long the check took, and why it is down."""

    name: str
    up: bool
    duration_ms: float
    error: str | None = None
    detail: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The check as it appears in the readiness body."""
        body: dict[str, Any] = {"status": "up" if self.up else "down", "duration_ms": round(self.duration_ms, 1)}
        if self.error:
            body["error"] = self.error
        if self.detail:
            body.update(self.detail)
        return body


Check = Callable[[], Mapping[str, Any] | None]


def _timed(name: str, check: Check) -> CheckResult:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the reason goes in the body
        message = redact(f"{type(exc).__name__}: {exc}")[:_MAX_ERROR_CHARS]
        return CheckResult(name, False, (time.perf_counter() - started) * 1000, error=message)
    return CheckResult(name, True, (time.perf_counter() - started) * 1000, detail=detail)


def run_checks(checks: Mapping[str, Check], *, timeout_s: float = 5.0) -> list[CheckResult]:
    """Run ``checks`` in parallel; a check still running after ``timeout_s`` counts as down."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(checks)), thread_name_prefix="health")
    try:
        futures = {name: pool.submit(_timed, name, check) for name, check in checks.items()}
        concurrent.futures.wait(futures.values(), timeout=timeout_s)
        results = []
        for name, future in futures.items():
            if future.done():
                results.append(future.result())
            else:
                results.append(CheckResult(name, False, timeout_s * 1000, error=f"timed out after {timeout_s:g} s"))
        return results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hung check must not hang the probe


def _redis_check(deps: Deps) -> Check:
    def check() -> None:
        deps.redis.ping()

    return check


def _queues_check(deps: Deps) -> Check:
    def check() -> Mapping[str, Any]:
        missing = []
        for name in worker_queues(deps.settings, include_poison=False):
            try:
                deps.queue_service.get_queue_client(name).get_queue_properties()
            except ResourceNotFoundError:
                missing.append(name)  # reachable; the queue is created on first send
        return {"missing_queues": missing} if missing else {}

    return check


def _database_check(deps: Deps) -> Check:
    def check() -> None:
        deps.store.ping()

    return check


def readiness(deps: Deps, *, timeout_s: float = 5.0) -> tuple[int, dict[str, Any]]:
    """Check Redis, the storage queues and the database; ``(200 | 503, body)``."""
    results = run_checks(
        {"redis": _redis_check(deps), "storage_queues": _queues_check(deps), "database": _database_check(deps)},
        timeout_s=timeout_s,
    )
    ready = all(r.up for r in results)
    body = {"status": "ready" if ready else "not_ready", "checks": {r.name: r.as_dict() for r in results}}
    return (200 if ready else 503), body
