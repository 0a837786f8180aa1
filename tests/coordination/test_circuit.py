"""The shared circuit breaker against real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from shared.coordination.circuit import CircuitBreaker, CircuitOpen, CircuitState


def _breaker(client: redis.Redis, cooldown_s: float = 0.3) -> CircuitBreaker:
    return CircuitBreaker(client, "exotel-test", failure_threshold=3, cooldown_s=cooldown_s, probe_ttl_s=5)


def test_stays_closed_below_the_threshold_and_success_resets_the_count(redis_client: redis.Redis) -> None:
    breaker = _breaker(redis_client)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state() is CircuitState.CLOSED
    assert breaker.before_call() is False


def test_opens_after_consecutive_failures_and_says_how_long(redis_client: redis.Redis) -> None:
    breaker = _breaker(redis_client, cooldown_s=30)
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state() is CircuitState.OPEN
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert 29 < (info.value.retry_after_s or 0) <= 30


def test_open_state_is_shared_by_every_instance(redis_client: redis.Redis) -> None:
    breaker = _breaker(redis_client, cooldown_s=30)
    for _ in range(3):
        breaker.record_failure()
    other = _breaker(redis.Redis(connection_pool=redis_client.connection_pool), cooldown_s=30)
    with pytest.raises(CircuitOpen):
        other.before_call()


def test_after_the_cooldown_one_probe_goes_and_others_wait(redis_client: redis.Redis) -> None:
    breaker = _breaker(redis_client)
    for _ in range(3):
        breaker.record_failure()
    time.sleep(0.35)
    assert breaker.before_call() is True  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    breaker.record_success()
    assert breaker.state() is CircuitState.CLOSED
    assert breaker.before_call() is False


def test_a_failed_probe_opens_the_circuit_again(redis_client: redis.Redis) -> None:
    breaker = _breaker(redis_client)
    for _ in range(3):
        breaker.record_failure()
    time.sleep(0.35)
    assert breaker.before_call() is True
    assert breaker.record_failure() is CircuitState.OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_a_probe_that_never_called_hands_the_probe_back(redis_client: redis.Redis) -> None:
    breaker = _breaker(redis_client)
    for _ in range(3):
        breaker.record_failure()
    time.sleep(0.35)
    assert breaker.before_call() is True
    breaker.release_probe()
    assert breaker.state() is CircuitState.HALF_OPEN
    assert breaker.before_call() is True  # the next caller probes at once, not after the probe TTL


def test_handing_back_a_probe_changes_nothing_when_closed_or_open(redis_client: redis.Redis) -> None:
    breaker = _breaker(redis_client, cooldown_s=30)
    breaker.release_probe()
    assert breaker.before_call() is False
    for _ in range(3):
        breaker.record_failure()
    breaker.release_probe()
    assert breaker.state() is CircuitState.OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()
