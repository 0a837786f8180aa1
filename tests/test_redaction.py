"""Log redaction: secrets never, phone numbers and e-mail addresses masked, ids and numbers untouched."""

from __future__ import annotations

import logging

import pytest

from shared.redaction import Redactor, install_log_redaction, redact, uninstall_log_redaction

CONN = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0LWtleS12YWx1ZQ==;EndpointSuffix=x"


@pytest.fixture
def installed():
    redactor = install_log_redaction(["redis://:p4ss-word!@cache:6380/0", CONN, "sk-test-openai-key"])
    yield redactor
    uninstall_log_redaction()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("send to +919876543210 failed", "send to +********3210 failed"),
        ("to 919876543210", "to ********3210"),
        ("from ops.team@example.com", "from o***@example.com"),
        ("job 550e8400-e29b-41d4-a716-446655440000 took 0.123456789 s", None),
        ("at 2026-01-01T10:00:00.123456+00:00 on 127.0.0.1:10101 v1.26.0 uid 1234567", None),
    ],
)
def test_masks_personal_data_and_leaves_ids_alone(text, expected):
    assert Redactor()(text) == (expected or text)


def test_secrets_and_their_parts_are_replaced(installed):
    text = f"url redis://:p4ss-word!@cache:6380/0 pw p4ss-word! key c2VjcmV0LWtleS12YWx1ZQ== conn {CONN}"
    redacted = installed(text)
    for secret in ("p4ss-word!", "c2VjcmV0LWtleS12YWx1ZQ==", CONN):
        assert secret not in redacted


def test_every_log_record_is_redacted_before_any_handler_sees_it(installed, caplog):
    log = logging.getLogger("tests.redaction")
    with caplog.at_level(logging.INFO):
        log.info("calling with %s for %s", "sk-test-openai-key", "+919876543210")
        try:
            _fail_with_secret()
        except ValueError:
            log.exception("boom")
    assert "sk-test-openai-key" not in caplog.text
    assert "9876543210" not in caplog.text
    assert "+********3210" in caplog.text


def _fail_with_secret():
    raise ValueError("auth failed for sk-test-openai-key")


def test_redact_for_extra_fields_uses_the_installed_secrets(installed):
    assert redact("reason: sk-test-openai-key to a@b.example") == "reason: *** to a***@b.example"
