"""The poller records each successful poll, so ``banxway_email_poll_lag_seconds`` reads as the KQL expects."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from prometheus_client.parser import text_string_to_metric_families

from shared.deps import Deps
from shared.mailbox.handlers import poll_inbox
from shared.metrics import EMAIL_LAST_POLL_SUCCESS, EMAIL_POLL_LAG
from shared.ops.exposition import render_metrics
from shared.ops.gauges import poll_lag_gauges
from shared.settings import Settings
from tests.mailbox.conftest import KEY
from tests.support.services import ImapAccount, ImapService


def _deps(database_url: str, redis_url: str, storage: str, imap_service: ImapService, container: str) -> Deps:
    return Deps(Settings.from_env({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "AzureWebJobsStorage": storage,
        "EMAIL_ENCRYPTION_KEY": KEY, "IMAP_CA_FILE": imap_service.ca_file or "", "IMAP_TIMEOUT_S": "5",
        "EMAIL_ATTACHMENTS_CONTAINER": container,
    }), message_encoding="base64")


def test_a_successful_poll_is_recorded_and_scraped_as_lag_by_account_id_while_a_failing_one_is_not(
    database_url: str, redis_url: str, storage_connection_string: str, imap_service: ImapService,
    imap_account: ImapAccount, make_email_account: Callable[..., str], attachments_container: str,
    redis_client: redis.Redis,
) -> None:
    good = make_email_account(imap_account)
    bad = make_email_account(imap_account, password="not-the-password")
    deps = _deps(database_url, redis_url, storage_connection_string, imap_service, attachments_container)
    try:
        before = time.time()
        assert poll_inbox(good, deps).outcome in ("polled", "idle")
        assert poll_inbox(bad, deps).outcome == "failed"

        recorded = deps.metrics.gauge_value(EMAIL_LAST_POLL_SUCCESS, account_id=good)
        assert recorded is not None
        assert before <= recorded <= time.time()
        assert deps.metrics.gauge_value(EMAIL_LAST_POLL_SUCCESS, account_id=bad) is None

        lags = {s.labels["account_id"]: s.value for s in poll_lag_gauges(deps)}
        assert set(lags) == {good}
        assert 0 <= lags[good] < 60

        families = {f.name: f for f in text_string_to_metric_families(render_metrics(deps).decode())}
        [sample] = families[EMAIL_POLL_LAG].samples
        assert families[EMAIL_POLL_LAG].type == "gauge"
        assert sample.labels == {"account_id": good}  # the label infra/queries/email_poll_lag.kql reads
    finally:
        deps.store.close()
