"""The Exotel stand-in behaves as Exotel documents its WhatsApp send API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from devhost.standins.exotel import ExotelStandin, RateLimit, sliding_window_counts

AUTH = ("test-key", "test-token")


def _message(to: str = "+919876543210", **extra: object) -> dict[str, object]:
    return {"from": "+911234567890", "to": to,
            "content": {"type": "text", "text": {"body": "hi"}}, **extra}


@pytest.fixture
def standin() -> Iterator[ExotelStandin]:
    with ExotelStandin() as server:
        yield server


def _post(standin: ExotelStandin, body: object, auth: tuple[str, str] = AUTH) -> requests.Response:
    url = f"{standin.url}/v2/accounts/{standin.account_sid}/messages"
    return requests.post(url, json=body, auth=auth, timeout=5)


def test_accepts_messages_with_one_sid_per_item_in_request_order(standin: ExotelStandin) -> None:
    response = _post(standin, {"whatsapp": {"messages": [_message(), _message("+919876543211")]}})
    assert response.status_code == 202
    body = response.json()
    assert body["http_code"] == 202
    assert body["metadata"] == {"failed": 0, "total": 2, "success": 2}
    items = body["response"]["whatsapp"]["messages"]
    assert [item["status"] for item in items] == ["success", "success"]
    sids = [item["data"]["sid"] for item in items]
    assert standin.accepted_sids() == sids
    assert all(len(sid) == 32 for sid in sids)


def test_a_failing_recipient_gives_207_with_only_that_item_failed(standin: ExotelStandin) -> None:
    standin.fail_recipients["+919876543211"] = (400, 1002, "invalid recipient")
    response = _post(standin, {"whatsapp": {"messages": [_message(), _message("+919876543211")]}})
    assert response.status_code == 207
    body = response.json()
    assert body["metadata"] == {"failed": 1, "total": 2, "success": 1}
    ok, failed = body["response"]["whatsapp"]["messages"]
    assert ok["status"] == "success"
    assert failed == {"code": 400, "status": "failure", "data": None,
                      "error_data": {"code": 1002, "message": "Invalid parameter", "description": "invalid recipient"}}


def test_an_item_missing_content_type_fails_per_item(standin: ExotelStandin) -> None:
    response = _post(standin, {"whatsapp": {"messages": [{"from": "+91", "to": "+92", "content": {}}]}})
    assert response.status_code == 207
    assert response.json()["response"]["whatsapp"]["messages"][0]["error_data"]["description"] == (
        "content.type is required"
    )


def test_wrong_credentials_get_401_with_the_v2_error_envelope(standin: ExotelStandin) -> None:
    response = _post(standin, {"whatsapp": {"messages": [_message()]}}, auth=("test-key", "wrong"))
    assert response.status_code == 401
    error = response.json()["response"]
    assert error["status"] == "failure"
    assert error["error_data"]["code"] == 1010
    assert standin.sends()[0].authorized is False


@pytest.mark.parametrize("messages", [[], [_message()] * 101, "nope"])
def test_a_body_without_1_to_100_messages_is_a_400(standin: ExotelStandin, messages: object) -> None:
    assert _post(standin, {"whatsapp": {"messages": messages}}).status_code == 400


@pytest.mark.parametrize("mode", ["sliding", "token_bucket"])
def test_over_the_rate_answers_429_with_retry_after(mode: str) -> None:
    with ExotelStandin(rate_limit=RateLimit(3, 60.0, mode)) as standin:  # type: ignore[arg-type]
        statuses = [_post(standin, {"whatsapp": {"messages": [_message()]}}) for _ in range(4)]
    assert [r.status_code for r in statuses] == [202, 202, 202, 429]
    limited = statuses[-1]
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["RestException"]["Code"] == "RATE_LIMIT_EXCEEDED"


def test_a_fixed_retry_after_is_sent_as_configured() -> None:
    with ExotelStandin(rate_limit=RateLimit(1, 60.0, retry_after_s=30)) as standin:
        _post(standin, {"whatsapp": {"messages": [_message()]}})
        assert _post(standin, {"whatsapp": {"messages": [_message()]}}).headers["Retry-After"] == "30"


def test_injected_server_errors_answer_the_next_requests_then_recover(standin: ExotelStandin) -> None:
    standin.fail_next(2, status=503)
    statuses = [_post(standin, {"whatsapp": {"messages": [_message()]}}).status_code for _ in range(3)]
    assert statuses == [503, 503, 202]


def test_slow_responses_are_delayed(standin: ExotelStandin) -> None:
    standin.delay_s = 0.5
    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{standin.url}/v2/accounts/{standin.account_sid}/messages",
                      json={"whatsapp": {"messages": [_message()]}}, auth=AUTH, timeout=(2, 0.1))
    # The message was accepted even though the client gave up: the ambiguous case.
    assert len(standin.accepted_sids()) == 1


def test_every_request_is_recorded_with_its_arrival_times(standin: ExotelStandin) -> None:
    before = time.monotonic()
    _post(standin, {"whatsapp": {"messages": [_message()]}})
    record = standin.sends()[0]
    assert before <= record.arrived_monotonic_s <= time.monotonic()
    assert record.arrived_wall.tzinfo is not None
    assert record.status == 202
    assert record.body["whatsapp"]["messages"][0]["to"] == "+919876543210"


def test_dlr_callbacks_echo_custom_data_to_the_status_callback(standin: ExotelStandin) -> None:
    received: list[dict[str, object]] = []

    class Callback(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        callback = f"http://127.0.0.1:{server.server_address[1]}/dlr"
        response = _post(standin, {"custom_data": "msg-1", "status_callback": callback,
                                   "whatsapp": {"messages": [_message()]}})
        sid = response.json()["response"]["whatsapp"]["messages"][0]["data"]["sid"]
        assert standin.send_dlr(sid, "EX_MESSAGE_SEEN") == 200
    finally:
        server.shutdown()
        server.server_close()
    item = received[0]["whatsapp"]["messages"][0]  # type: ignore[index]
    assert item["callback_type"] == "dlr"
    assert item["sid"] == sid
    assert item["custom_data"] == "msg-1"
    assert item["exo_detailed_status"] == "EX_MESSAGE_SEEN"
    assert item["exo_status_code"] == 30003
    assert item["to"] == "919876543210"


def test_sliding_window_counts_use_half_open_windows() -> None:
    assert max(sliding_window_counts([0.0, 0.5, 1.0, 1.6])) == 2
    assert max(sliding_window_counts([0.0, 0.1, 0.2, 0.99])) == 4
