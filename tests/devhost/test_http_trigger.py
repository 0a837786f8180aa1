"""HTTP triggers: routes with parameters, methods, auth levels with keys, responses, Disabled, admin API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from devhost import LocalHost
from tests.devhost.conftest import APP_ROOT
from tests.devhost.probe import Probe

Start = Callable[..., LocalHost]
KEYS = {"DEVHOST_FUNCTION_KEY": "fn-key", "DEVHOST_MASTER_KEY": "master-key"}


def _request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


@pytest.fixture
def http_host(local_host: Start) -> LocalHost:
    return local_host(functions=["open_route", "item", "admin_only", "boom"], settings=KEYS, script_root=APP_ROOT)


def test_anonymous_route_answers_with_the_functions_response(http_host: LocalHost) -> None:
    status, headers, body = _request(f"{http_host.base_url}/api/open")

    assert (status, body, headers["X-Test"]) == (200, b"open", "yes")
    assert headers["Content-Type"].startswith("text/plain")


def test_function_level_route_needs_a_function_or_master_key(http_host: LocalHost) -> None:
    url = f"{http_host.base_url}/api/items/42?q=x"

    assert _request(url)[0] == 401
    assert _request(url, headers={"x-functions-key": "wrong"})[0] == 401
    assert _request(url, headers={"x-functions-key": "fn-key"})[0] == 200
    assert _request(f"{url}&code=fn-key")[0] == 200
    assert _request(url, headers={"x-functions-key": "master-key"})[0] == 200


def test_route_parameters_query_method_and_body_reach_the_function(http_host: LocalHost) -> None:
    status, headers, body = _request(
        f"{http_host.base_url}/api/items/abc?q=hello",
        method="POST",
        body=b"12345",
        headers={"x-functions-key": "fn-key"},
    )

    assert status == 201
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"id": "abc", "q": "hello", "len": 5}


def test_method_not_listed_is_not_routed(http_host: LocalHost) -> None:
    assert (
        _request(f"{http_host.base_url}/api/items/1", method="DELETE", headers={"x-functions-key": "fn-key"})[0] == 404
    )


def test_admin_level_route_needs_the_master_key(http_host: LocalHost) -> None:
    url = f"{http_host.base_url}/api/admin-only"

    assert _request(url, headers={"x-functions-key": "fn-key"})[0] == 401
    assert _request(url, headers={"x-functions-key": "master-key"})[0] == 200


def test_function_exception_answers_500(http_host: LocalHost) -> None:
    assert _request(f"{http_host.base_url}/api/boom")[0] == 500


def test_without_configured_keys_function_routes_answer_401(local_host: Start) -> None:
    host = local_host(functions=["item"], script_root=APP_ROOT)

    assert _request(f"{host.base_url}/api/items/1")[0] == 401
    assert _request(f"{host.base_url}/api/items/1?code=")[0] == 401


def test_disabled_http_function_answers_404(local_host: Start) -> None:
    host = local_host(
        functions=["open_route"], settings={"AzureWebJobs.open_route.Disabled": "1"}, script_root=APP_ROOT
    )

    assert _request(f"{host.base_url}/api/open")[0] == 404


def test_admin_endpoint_runs_a_timer_function_with_the_master_key(local_host: Start, probe: Probe) -> None:
    host = local_host(functions=["monitored"], settings=KEYS, script_root=APP_ROOT)
    url = f"{host.base_url}/admin/functions/monitored"

    assert _request(url, method="POST", body=b"{}", headers={"x-functions-key": "fn-key"})[0] == 401
    assert _request(url, method="POST", body=b"{}", headers={"x-functions-key": "master-key"})[0] == 202
    probe.wait_for("monitored", 1)
    time.sleep(0.1)
