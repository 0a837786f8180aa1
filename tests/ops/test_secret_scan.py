"""No secret value from the settings appears in the captured logs of a full flow (jobs, failures, ops)."""

from __future__ import annotations

import io
import logging
import uuid

import pytest

from shared.errors import Reject, RetryLater
from shared.ops.cli import main
from shared.ops.exposition import render_metrics
from shared.ops.health import readiness
from shared.redaction import uninstall_log_redaction
from shared.telemetry import configure_telemetry, reset_telemetry_state
from tests.support.ops import receive_one

SECRETS = {
    "EXOTEL_API_KEY": "exo-api-key-7d1f0c",
    "EXOTEL_TOKEN": "exo-token-99ab12cd",
    "EXOTEL_CALLBACK_SECRET": "callback-secret-5e6f",
    "OPENAI_API_KEY": "sk-proj-abcdef123456",
    "EMAIL_ENCRYPTION_KEY": "email-enc-key-0042",
    "SUPABASE_SERVICE_ROLE_KEY": "eyJhbGciOiJIUzI1NiJ9.service-role",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=ikey-1234-5678;IngestionEndpoint=http://127.0.0.1:1/",
}


@pytest.fixture
def flow_deps(make_ops_deps):
    deps = make_ops_deps(**SECRETS)
    configure_telemetry(deps.settings, environ={"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"})
    yield deps
    uninstall_log_redaction()
    reset_telemetry_state()


def test_no_secret_value_appears_in_the_logs_of_a_full_flow(flow_deps, caplog):
    deps = flow_deps
    queue = deps.settings.whatsapp_queue_name
    settings_secrets = deps.settings.secret_values()
    assert len(settings_secrets) >= len(SECRETS) + 3  # plus REDIS_URL, AzureWebJobsStorage, DATABASE_URL
    leaky = logging.getLogger("shared.whatsapp.leaky")

    def leaks_then_succeeds(job):
        leaky.info("calling Exotel with %s:%s for %s", SECRETS["EXOTEL_API_KEY"], SECRETS["EXOTEL_TOKEN"],
                   job.payload.data.to)

    def rate_limited(_job):
        raise RetryLater(f"429 with token {SECRETS['EXOTEL_TOKEN']}", code="exotel_rate_limited")

    def rejects(_job):
        raise Reject(f"bad key {SECRETS['OPENAI_API_KEY']}")

    def crashes(_job):
        raise RuntimeError(f"db url was {deps.settings.database_url.get_secret_value()}")

    with caplog.at_level(logging.DEBUG):
        for handler in (leaks_then_succeeds, rate_limited, rejects, crashes):
            deps.queues.enqueue(queue, "whatsapp", {
                "action": "SEND_MESSAGE",
                "data": {"threadId": str(uuid.uuid4()), "to": "+919876543210", "messageId": str(uuid.uuid4()),
                         "text": "hello"},
            })
            message = receive_one(deps, queue)
            try:
                deps.run_message(message, kind="whatsapp", queue=queue, handler=handler)
            except RuntimeError:
                logging.getLogger("tests.host").exception("function failed")
        readiness(deps)
        render_metrics(deps)
        main(["dead-letters"], deps=deps, out=io.StringIO(), err=io.StringIO())
        main(["retry", "whatsapp"], deps=deps, out=io.StringIO(), err=io.StringIO())
        logging.getLogger("tests.settings").warning("settings: %r / %s", deps.settings, settings_secrets)

    assert any(r.getMessage().startswith("job finished") for r in caplog.records)
    texts = [caplog.text] + [str(vars(r)) for r in caplog.records]
    for secret in settings_secrets:
        for text in texts:
            assert secret not in text
    assert "9876543210" not in caplog.text
