"""Timer triggers: NCRONTAB schedules (UTC), one invocation at a time, ``runOnStartup``, ``useMonitor``.

As the host's ``TimerListener``: the next occurrence is computed after an invocation finishes, so a tick that
falls while the function is still running is skipped. With ``useMonitor`` (default: on for schedules of a
minute or more) the schedule status is kept in the storage account (blob
``azure-webjobs-hosts/timers/<hostId>/Host.Functions.<name>/status``, JSON ``Last``/``Next``/``LastUpdated``);
on start, a recorded ``Next`` in the past means an occurrence was missed and the function runs at once with
``past_due = True``. Otherwise ``runOnStartup`` runs it once at start with ``past_due = False``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient

from devhost.index import FunctionSpec
from devhost.invoker import Invoker
from devhost.ncrontab import Schedule

__all__ = ["STATUS_CONTAINER", "ScheduleMonitor", "TimerListener"]

logger = logging.getLogger(__name__)

STATUS_CONTAINER = "azure-webjobs-hosts"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class ScheduleMonitor:
    """Schedule status blobs, as the host's ``StorageScheduleMonitor`` keeps them."""

    def __init__(self, blobs: BlobServiceClient, host_id: str) -> None:
        self._blobs = blobs
        self._container = blobs.get_container_client(STATUS_CONTAINER)
        self._host_id = host_id

    def close(self) -> None:
        """Close the storage client."""
        self._blobs.close()

    def _blob_name(self, function_name: str) -> str:
        return f"timers/{self._host_id}/Host.Functions.{function_name}/status"

    def read(self, function_name: str) -> dict[str, str] | None:
        """The stored status, or ``None`` if there is none."""
        try:
            data = self._container.download_blob(self._blob_name(function_name)).readall()
        except ResourceNotFoundError:
            return None
        status: dict[str, str] = json.loads(data)
        return status

    def write(self, function_name: str, last: datetime | None, next_: datetime) -> None:
        """Record the last and next occurrence."""
        status = {"Last": _iso(last) if last else None, "Next": _iso(next_), "LastUpdated": _iso(datetime.now(UTC))}
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()
        self._container.upload_blob(self._blob_name(function_name), json.dumps(status), overwrite=True)


class TimerListener:
    """Runs one timer-triggered function on its schedule until ``stop()``."""

    def __init__(
        self,
        spec: FunctionSpec,
        schedule: Schedule,
        invoker: Invoker,
        monitor: ScheduleMonitor | None,
    ) -> None:
        self.spec = spec
        self.schedule = schedule
        self._invoker = invoker
        use_monitor = spec.trigger.get("useMonitor")
        if use_monitor is None:
            use_monitor = schedule.shortest_interval_s(datetime.now(UTC)) >= 60
        self._monitor = monitor if use_monitor else None
        self._run_on_startup = bool(spec.trigger.get("runOnStartup"))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"devhost-timer-{spec.name}", daemon=True)
        self._running = threading.Lock()
        self.last_status: dict[str, Any] = {}

    def start(self) -> None:
        """Start the schedule thread."""
        self._thread.start()

    def stop(self, grace_s: float) -> None:
        """Stop scheduling; wait up to ``grace_s`` for a running invocation."""
        self._stopping.set()
        self._thread.join(timeout=grace_s)

    def _run(self) -> None:
        now = datetime.now(UTC)
        past_due = self._check_past_due(now)
        if past_due:
            self._invoke(now, past_due=True)
        elif self._run_on_startup:
            self._invoke(now, past_due=False)
        while not self._stopping.is_set():
            due = self.schedule.next_after(datetime.now(UTC))
            if self._stopping.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            self._invoke(due, past_due=False)

    def _check_past_due(self, now: datetime) -> bool:
        if self._monitor is None:
            return False
        try:
            status = self._monitor.read(self.spec.name)
            if status is None or not status.get("Next"):
                self._monitor.write(self.spec.name, None, self.schedule.next_after(now))
                return False
        except AzureError as exc:
            logger.warning("Timer '%s': schedule monitor unavailable (%s); not checking past due", self.spec.name, exc)
            return False
        recorded_next = datetime.fromisoformat(status["Next"])
        if recorded_next < now:
            logger.info("Function 'Functions.%s' is past due on startup: scheduled %s", self.spec.name, status["Next"])
            return True
        return False

    def invoke_now(self, past_due: bool = False) -> bool:
        """Run the function once unless it is already running (for the admin endpoint); False if skipped."""
        return self._invoke(datetime.now(UTC), past_due=past_due)

    def _invoke(self, scheduled: datetime, past_due: bool) -> bool:
        if not self._running.acquire(blocking=False):
            logger.info("Timer 'Functions.%s' is still running; skipping this occurrence", self.spec.name)
            return False
        try:
            next_ = self.schedule.next_after(datetime.now(UTC))
            self.last_status = {"Last": _iso(scheduled), "Next": _iso(next_), "LastUpdated": _iso(datetime.now(UTC))}
            request = TimerRequest(
                past_due=past_due, schedule_status=dict(self.last_status), schedule={"AdjustForDST": True}
            )
            logger.info(
                "Executing 'Functions.%s' (Reason='Timer fired at %s', past_due=%s)",
                self.spec.name,
                _iso(scheduled),
                past_due,
            )
            started = time.monotonic()
            future = self._invoker.invoke(self.spec, {self.spec.trigger["name"]: request})
            error = future.exception()  # one invocation at a time: wait for it
            duration_ms = int((time.monotonic() - started) * 1000)
            if error is None:
                logger.info("Executed 'Functions.%s' (Succeeded, Duration=%sms)", self.spec.name, duration_ms)
            else:
                logger.error(
                    "Executed 'Functions.%s' (Failed, Duration=%sms)", self.spec.name, duration_ms, exc_info=error
                )
            if self._monitor is not None:
                try:
                    self._monitor.write(self.spec.name, scheduled, self.schedule.next_after(datetime.now(UTC)))
                except AzureError as exc:
                    logger.warning("Timer '%s': writing schedule status failed: %s", self.spec.name, exc)
            return True
        finally:
            self._running.release()
