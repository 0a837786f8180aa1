"""Readiness: 200 when Redis, the queues and the database answer; 503 while one is down; 200 again after."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from shared.ops.health import readiness, run_checks
from shared.redaction import install_log_redaction, uninstall_log_redaction
from tests.support.ops import TcpProxy


def _wait_for(deps, status, *, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = readiness(deps, timeout_s=3)
        if code == status or time.monotonic() > deadline:
            return code, body
        time.sleep(0.5)


def test_ready_when_every_dependency_answers_with_timings(make_ops_deps):
    code, body = readiness(make_ops_deps())
    assert code == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"redis", "storage_queues", "database"}
    for check in body["checks"].values():
        assert check["status"] == "up"
        assert check["duration_ms"] >= 0


def test_not_ready_while_redis_is_stopped_and_ready_when_it_returns(make_ops_deps, throwaway_redis):
    deps = make_ops_deps(REDIS_URL=throwaway_redis.url)
    assert readiness(deps)[0] == 200

    throwaway_redis.stop()
    code, body = readiness(deps, timeout_s=3)
    assert code == 503
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["status"] == "up"

    throwaway_redis.start()
    code, body = _wait_for(deps, 200)
    assert code == 200, body


def test_not_ready_while_the_database_is_unreachable_and_ready_when_it_returns(make_ops_deps, database_url):
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    proxy.start()
    try:
        deps = make_ops_deps(DATABASE_URL=proxy.url_for(database_url), DATABASE_CONNECT_TIMEOUT_S="2")
        assert readiness(deps)[0] == 200

        proxy.stop()
        code, body = _wait_for(deps, 503, timeout_s=15)
        assert code == 503, body
        assert body["checks"]["database"]["status"] == "down"
        assert body["checks"]["redis"]["status"] == "up"

        proxy.start()
        code, body = _wait_for(deps, 200)
        assert code == 200, body
    finally:
        proxy.stop()


def test_a_hung_check_counts_as_down_after_the_timeout():
    results = run_checks({"slow": lambda: time.sleep(2), "fast": lambda: None}, timeout_s=0.2)
    by_name = {r.name: r for r in results}
    assert not by_name["slow"].up
    assert "timed out" in (by_name["slow"].error or "")
    assert by_name["fast"].up


def test_a_failed_check_never_shows_a_secret(make_ops_deps):
    deps = make_ops_deps(REDIS_URL="redis://:hunter2-very-secret@127.0.0.1:1/0")
    install_log_redaction(deps.settings.secret_values())
    try:
        code, body = readiness(deps, timeout_s=3)
    finally:
        uninstall_log_redaction()
    assert code == 503
    assert "hunter2-very-secret" not in str(body)
