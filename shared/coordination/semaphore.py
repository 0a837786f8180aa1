"""A global counting semaphore in Redis with expiring, renewable leases (e.g. transcriptions in flight).

Each holder has a lease (a member of a sorted set scored by its expiry in Redis server time). Taking a lease
first drops expired ones, so a crashed instance frees its slot after ``lease_s`` without anyone cleaning up.
``hold()`` renews the lease in a background thread every ``lease_s / 3`` while the work runs and releases it
on exit, whatever happens. A renewal that finds the lease already expired (a stall longer than ``lease_s``,
Redis losing data) marks it ``lost``: the slot may already belong to someone else, so the holder must stop —
long-running work calls ``lease.ensure_held()`` between its stages, which raises ``LeaseLost`` (a deferral).
A full semaphore raises ``SemaphoreFull`` (a ``RetryLater`` carrying the time until the earliest lease
expires) so the job goes back to its queue instead of waiting in-process.

Scripts: ``semaphore_acquire.lua`` and ``semaphore_renew.lua`` beside this module.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from shared.coordination.keys import SEMAPHORE_PREFIX
from shared.errors import RetryLater

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Lease", "LeaseLost", "Semaphore", "SemaphoreFull", "SemaphoreUnavailable"]

log = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent


@cache
def _script(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


class SemaphoreFull(RetryLater):
    """Every slot is leased; retry after ``retry_after_s`` (when the earliest lease would expire).

    A deferral (``counts_attempt=False``): the work never started, so the job keeps its attempt number.
    """

    code = "semaphore_full"

    def __init__(self, message: str, *, name: str, retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s, counts_attempt=False)
        #: The semaphore's name, so a caller holding several can tell which one was full.
        self.name = name


class SemaphoreUnavailable(RetryLater):
    """Redis could not be reached to take or give back a slot."""

    code = "semaphore_unavailable"


class LeaseLost(RetryLater):
    """The lease expired while the work ran, so the cap may be exceeded: stop and try again later.

    A deferral (``counts_attempt=False``): the work was interrupted by us, not failed by the far side.
    """

    code = "lease_lost"

    def __init__(self, message: str, *, name: str, code: str | None = None) -> None:
        super().__init__(message, code=code, counts_attempt=False)
        #: The semaphore's name.
        self.name = name


class Lease:
    """One held slot. ``lost`` turns True when a renewal found the lease already expired."""

    def __init__(self, semaphore: Semaphore, token: str) -> None:
        self.semaphore, self.token = semaphore, token
        self.lost = False

    def renew(self) -> bool:
        """Extend the lease by ``lease_s``; False (and ``lost``) when it had already expired."""
        ok = self.semaphore.renew(self.token)
        if not ok:
            self.lost = True
        return ok

    def ensure_held(self, *, code: str | None = None) -> None:
        """Raise ``LeaseLost`` (with ``code`` when given) if a renewal found the lease expired; call it between
        stages of long work so a lost slot stops the work instead of exceeding the cap."""
        if self.lost:
            raise LeaseLost(f"semaphore {self.semaphore.name}: the lease expired while the work ran",
                            name=self.semaphore.name, code=code)

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        self.semaphore.redis.zrem(self.semaphore.key, self.token)


class Semaphore:
    """At most ``limit`` leases of ``name`` held at once across every instance."""

    def __init__(self, redis: Redis, name: str, *, limit: int, lease_s: float = 60.0) -> None:
        if limit < 1 or lease_s <= 0:
            raise ValueError("limit must be at least 1 and lease_s positive")
        self.redis, self.name, self.limit, self.lease_s = redis, name, limit, lease_s
        self.key = f"{SEMAPHORE_PREFIX}:{name}"
        self.lease_ms = max(1, int(lease_s * 1000))
        self._acquire = redis.register_script(_script("semaphore_acquire.lua"))
        self._renew = redis.register_script(_script("semaphore_renew.lua"))

    def acquire(self, token: str | None = None) -> Lease:
        """Take a slot (or refresh ``token``'s). Raises ``SemaphoreFull`` or ``SemaphoreUnavailable``."""
        from redis.exceptions import RedisError

        token = token or uuid.uuid4().hex
        try:
            held, value = self._acquire(keys=[self.key], args=[token, self.limit, self.lease_ms])
        except RedisError as exc:
            raise SemaphoreUnavailable(f"semaphore {self.name}: Redis unavailable ({type(exc).__name__})") from exc
        if not held:
            raise SemaphoreFull(f"all {self.limit} {self.name} slots are in use", name=self.name,
                                retry_after_s=max(1.0, int(value) / 1000))
        return Lease(self, token)

    def renew(self, token: str) -> bool:
        """Extend ``token``'s lease by ``lease_s``; False when it had already expired (it is not revived)."""
        return bool(self._renew(keys=[self.key], args=[token, self.lease_ms]))

    def in_use(self) -> int:
        """Leases currently held (expired ones not yet dropped may be counted)."""
        return int(self.redis.zcard(self.key))

    @contextmanager
    def hold(self, token: str | None = None) -> Iterator[Lease]:
        """Hold a slot for the ``with`` block, renewing it meanwhile and releasing it on exit."""
        lease = self.acquire(token)
        stop = threading.Event()
        renewer = threading.Thread(target=self._keep_renewed, args=(lease, stop), daemon=True,
                                   name=f"semaphore-{self.name}")
        renewer.start()
        try:
            yield lease
        finally:
            stop.set()
            renewer.join(timeout=5)
            self._release_quietly(lease)

    def _keep_renewed(self, lease: Lease, stop: threading.Event) -> None:
        from redis.exceptions import RedisError

        while not stop.wait(self.lease_s / 3):
            try:
                if not lease.renew():
                    log.warning("semaphore %s: lease %s expired before renewal", self.name, lease.token)
                    return
            except RedisError:  # a Redis hiccup must not kill the job; the next tick tries again
                log.warning("semaphore %s: lease renewal failed", self.name, exc_info=True)

    def _release_quietly(self, lease: Lease) -> None:
        from redis.exceptions import RedisError

        try:
            lease.release()
        except RedisError:  # the lease then expires by itself after lease_s
            log.warning("semaphore %s: release failed; the lease expires in %.0f s", self.name, self.lease_s,
                        exc_info=True)

    def __repr__(self) -> str:
        return f"Semaphore({self.name!r}, limit={self.limit}, lease_s={self.lease_s})"
