"""The Exotel client against the stand-in: body shape, auth, ids, per-item failures and error classes."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from devhost.standins.exotel import ExotelStandin, RateLimit
from shared.errors import Reject, RetryLater
from shared.whatsapp.exotel import (
    ExotelClient,
    ExotelConfig,
    ExotelItemFailed,
    ExotelOutcomeUnknown,
    ExotelRateLimited,
    ExotelRejected,
    ExotelUnavailable,
    OutboundMessage,
    media_content,
    media_filename,
    retry_after_seconds,
    template_content,
    text_content,
)

TO = "+919876543210"


@pytest.fixture
def standin() -> Iterator[ExotelStandin]:
    with ExotelStandin() as server:
        yield server


def _client(standin: ExotelStandin, *, token: str = "test-token",  # noqa: S107
            callback: str | None = None,
            read_timeout_s: float = 5.0, url: str | None = None) -> ExotelClient:
    config = ExotelConfig(
        api_url=url or standin.url, account_sid=standin.account_sid, api_key="test-key", api_token=token,
        from_number="+911234567890", status_callback_url=callback, connect_timeout_s=2.0,
        read_timeout_s=read_timeout_s,
    )
    return ExotelClient(requests.Session(), config)


def _msg(to: str = TO, custom_data: str = "msg-1") -> OutboundMessage:
    return OutboundMessage(to=to, content=text_content("hello"), custom_data=custom_data)


def test_sends_the_nested_body_with_basic_auth_header_and_custom_data(standin: ExotelStandin) -> None:
    sid, _ = _client(standin, callback="https://hooks.example/dlr/s3cret").send_one(_msg())
    record = standin.sends()[0]
    assert record.authorized
    message = record.body["whatsapp"]["messages"][0]
    assert message == {
        "from": "+911234567890", "to": TO, "custom_data": "msg-1",
        "status_callback": "https://hooks.example/dlr/s3cret",
        "content": {"recipient_type": "individual", "type": "text", "text": {"preview_url": False, "body": "hello"}},
    }
    assert sid == standin.accepted_sids()[0]


def test_credentials_travel_in_the_header_not_the_url(standin: ExotelStandin) -> None:
    captured: list[requests.PreparedRequest] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *_a, **_k: captured.append(r.request))
    client = ExotelClient(session, _client(standin).config)
    client.send_one(_msg())
    request = captured[0]
    assert "test-token" not in (request.url or "")
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"test-key:test-token").decode()


def test_no_status_callback_is_sent_when_none_is_configured(standin: ExotelStandin) -> None:
    _client(standin).send_one(_msg())
    assert "status_callback" not in standin.sends()[0].body["whatsapp"]["messages"][0]


def test_the_sid_comes_from_each_item_in_request_order(standin: ExotelStandin) -> None:
    results = _client(standin).send([_msg(custom_data="a"), _msg("+919876543211", custom_data="b")])
    assert [r.sid for r in results] == standin.accepted_sids()
    assert all(r.ok for r in results)


def test_a_failed_item_inside_a_207_fails_only_that_message(standin: ExotelStandin) -> None:
    standin.fail_recipients["+919876543211"] = (400, 1002, "recipient not on WhatsApp")
    ok, failed = _client(standin).send([_msg(), _msg("+919876543211")])
    assert ok.ok
    assert ok.sid
    assert not failed.ok
    assert failed.sid is None
    with pytest.raises(ExotelItemFailed) as info:
        failed.raise_for_failure()
    assert info.value.error_code == 1002
    assert info.value.description == "recipient not on WhatsApp"
    assert isinstance(info.value, Reject)


def test_a_single_failed_item_raises_item_failed(standin: ExotelStandin) -> None:
    standin.fail_recipients[TO] = (400, 1002, "bad number")
    with pytest.raises(ExotelItemFailed, match="1002 bad number"):
        _client(standin).send_one(_msg())


def test_template_language_goes_as_code_and_policy(standin: ExotelStandin) -> None:
    components = [{"type": "body", "parameters": [{"type": "text", "text": "Rahul"}]}]
    content = template_content("order_confirmation", "en_US", components)
    _client(standin).send_one(OutboundMessage(TO, content, "m"))
    sent = standin.sends()[0].body["whatsapp"]["messages"][0]["content"]
    assert sent["template"] == {"name": "order_confirmation", "language": {"code": "en_US", "policy": "deterministic"},
                                "components": components}


@pytest.mark.parametrize(("url", "name"), [
    ("https://blob.example/c/invoice%20May.pdf?sv=2024&sig=SECRET", "invoice May.pdf"),
    ("https://blob.example/c/report.pdf#page=2", "report.pdf"),
    ("https://blob.example/?sig=SECRET", "document"),
    ("https://blob.example/a/b/", "document"),
])
def test_media_filename_never_includes_the_query_string(url: str, name: str) -> None:
    assert media_filename(url) == name


def test_document_content_has_filename_and_caption() -> None:
    content = media_content("https://x.example/f/a.pdf?sig=S", "document", "Invoice")
    assert content["document"] == {"link": "https://x.example/f/a.pdf?sig=S", "filename": "a.pdf", "caption": "Invoice"}
    assert "caption" not in media_content("https://x.example/a.mp3", "audio", "x")["audio"]


def test_401_is_a_reject_keeping_exotels_code_and_description(standin: ExotelStandin) -> None:
    with pytest.raises(ExotelRejected) as info:
        _client(standin, token="wrong").send_one(_msg())
    assert info.value.status == 401
    assert info.value.error_code == 1010
    assert info.value.description == "invalid API key or token"
    assert "wrong" not in str(info.value)


def test_429_is_retry_later_honouring_retry_after() -> None:
    with ExotelStandin(rate_limit=RateLimit(1, 60.0, retry_after_s=30)) as standin:
        client = _client(standin)
        client.send_one(_msg())
        with pytest.raises(ExotelRateLimited) as info:
            client.send_one(_msg())
    assert info.value.retry_after_s == 30
    assert isinstance(info.value, RetryLater)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retry_later(standin: ExotelStandin, status: int) -> None:
    standin.fail_next(1, status)
    with pytest.raises(ExotelUnavailable):
        _client(standin).send_one(_msg())


def test_a_refused_connection_is_unavailable_not_ambiguous(standin: ExotelStandin) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ExotelUnavailable):
        _client(standin, url=f"http://127.0.0.1:{port}").send_one(_msg())


def test_a_read_timeout_is_an_unknown_outcome(standin: ExotelStandin) -> None:
    standin.delay_s = 0.5
    with pytest.raises(ExotelOutcomeUnknown):
        _client(standin, read_timeout_s=0.1).send_one(_msg())
    assert len(standin.accepted_sids()) == 1  # it was sent: hence "unknown", never a blind re-send


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("30") == 30
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:10 GMT", now=now) == 10
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_config_repr_hides_the_token() -> None:
    config = ExotelConfig("http://x", "sid", "key", "TOKEN-VALUE", "+91")
    assert "TOKEN-VALUE" not in repr(config)
