"""Run user functions as the Python worker does: sync ones in a thread pool, async ones on one event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from azure.functions import _abc as azf_abc

from devhost.index import FunctionSpec

__all__ = ["Invoker", "LocalContext"]


class _TraceContext(azf_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(azf_abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> azf_abc.RpcException | None:  # type: ignore[override]
        return None


class LocalContext(azf_abc.Context):
    """The ``context`` argument: invocation id, function name and directory, trace and retry context."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._local = threading.local()
        self._local.invocation_id = self._invocation_id
        self._trace = _TraceContext()
        self._retry = _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> azf_abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> azf_abc.RetryContext:
        return self._retry


def _default_threads() -> int:
    configured = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return min(32, (os.cpu_count() or 1) + 4)


class Invoker:
    """Submits invocations; ``invoke`` returns a Future with the function's return value or exception."""

    def __init__(self, script_root: str, max_threads: int | None = None) -> None:
        self._script_root = script_root
        self._pool = ThreadPoolExecutor(max_threads or _default_threads(), thread_name_prefix="devhost-fn")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="devhost-loop", daemon=True)
        self._loop_thread.start()

    def invoke(self, spec: FunctionSpec, arguments: dict[str, Any]) -> Future[Any]:
        """Call ``spec.func(**arguments)`` (adding ``context`` if the function takes one)."""
        if spec.wants_context:
            arguments = {**arguments, "context": LocalContext(spec.name, self._script_root)}
        if spec.is_async:
            return asyncio.run_coroutine_threadsafe(spec.func(**arguments), self._loop)
        return self._pool.submit(spec.func, **arguments)

    def shutdown(self) -> None:
        """Stop accepting work; running sync invocations finish in their threads, async ones are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        if not self._loop_thread.is_alive():
            self._loop.close()
