"""The global semaphore caps leases across holders, expires abandoned leases, renews and releases held ones."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from shared.coordination.semaphore import LeaseLost, Semaphore, SemaphoreFull
from shared.errors import RetryLater


def test_no_more_than_limit_leases_are_held_and_a_full_semaphore_says_retry_later(
    redis_client: redis.Redis
) -> None:
    sem = Semaphore(redis_client, "t", limit=2, lease_s=30)
    first, second = sem.acquire(), sem.acquire()

    with pytest.raises(SemaphoreFull) as caught:
        sem.acquire()
    assert isinstance(caught.value, RetryLater)
    assert 1.0 <= (caught.value.retry_after_s or 0) <= 30.0

    first.release()
    third = sem.acquire()
    assert sem.in_use() == 2
    second.release()
    third.release()
    assert sem.in_use() == 0


def test_acquiring_again_with_the_same_token_does_not_take_a_second_slot(redis_client: redis.Redis) -> None:
    sem = Semaphore(redis_client, "t", limit=1, lease_s=30)
    sem.acquire("job-1")
    sem.acquire("job-1")
    assert sem.in_use() == 1


def test_an_abandoned_lease_expires_and_frees_its_slot(redis_client: redis.Redis) -> None:
    sem = Semaphore(redis_client, "t", limit=1, lease_s=0.3)
    crashed = sem.acquire()
    with pytest.raises(SemaphoreFull):
        sem.acquire()
    time.sleep(0.4)
    sem.acquire()
    assert not crashed.renew()  # an expired lease is not revived
    assert crashed.lost


def test_hold_renews_the_lease_while_work_runs_and_releases_it_on_error(redis_client: redis.Redis) -> None:
    sem = Semaphore(redis_client, "t", limit=1, lease_s=0.3)
    seen: list[bool] = []

    def work() -> None:
        with sem.hold() as lease:
            time.sleep(0.8)  # well past the lease: only renewal keeps it
            seen.append(lease.lost)
            with pytest.raises(SemaphoreFull):
                sem.acquire()
            raise RuntimeError("work failed")

    with pytest.raises(RuntimeError):
        work()
    assert seen == [False]
    assert sem.in_use() == 0


def test_concurrent_holders_never_exceed_the_limit(redis_client: redis.Redis) -> None:
    sem = Semaphore(redis_client, "t", limit=3, lease_s=10)
    active, peak, refused = [0], [0], [0]
    lock = threading.Lock()

    def worker() -> None:
        try:
            with sem.hold():
                with lock:
                    active[0] += 1
                    peak[0] = max(peak[0], active[0])
                time.sleep(0.05)
                with lock:
                    active[0] -= 1
        except SemaphoreFull:
            with lock:
                refused[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= peak[0] <= 3
    assert refused[0] >= 1
    assert sem.in_use() == 0


def test_a_lease_found_expired_at_renewal_is_lost_and_ensure_held_raises_a_deferral(
    redis_client: redis.Redis
) -> None:
    sem = Semaphore(redis_client, "t", limit=1, lease_s=0.3)
    with sem.hold() as lease:
        lease.ensure_held()  # held: no error
        redis_client.delete(sem.key)  # Redis lost it (or we stalled past lease_s)
        deadline = time.monotonic() + 5
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.lost
        with pytest.raises(LeaseLost) as caught:
            lease.ensure_held(code="work_slot_lost")
    assert isinstance(caught.value, RetryLater)
    assert caught.value.counts_attempt is False
    assert caught.value.code == "work_slot_lost"
    assert caught.value.name == "t"
