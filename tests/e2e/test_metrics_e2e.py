"""/api/metrics and /api/health/ready through the local host: the counters match what the workers did."""

from __future__ import annotations

import json
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from devhost.standins.openai import OpenAIServer
from devhost.standins.recordings import RecordingServer
from scripts.seed_demo import demo_emails
from tests.e2e.conftest import AppHost, Db, wait_for
from tests.e2e.test_transcription_e2e import make_voice_message, transcription_settings
from tests.support.services import ImapAccount, ImapService

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _jobs(samples: Samples, queues: set[str]) -> dict[tuple[str, str], float]:
    """``banxway_jobs_total`` as {(queue, outcome): count} for ``queues``."""
    found = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "banxway_jobs_total" and label.get("queue") in queues:
            found[(label["queue"], label["outcome"])] = value
    return found


def test_metrics_count_the_jobs_of_a_run_by_queue_and_outcome_and_readiness_is_ok(
    app_host: Callable[..., AppHost], imap_service: ImapService, imap_account: ImapAccount,
    make_email_account: Callable[..., str], recording_server: RecordingServer, openai_server: OpenAIServer,
    db: Db,
) -> None:
    for raw in demo_emails()[:2]:
        imap_service.append(raw, user=imap_account.user)
    make_email_account(imap_account.user, imap_account.password)
    url = recording_server.recording_url("metrics-call", duration_s=5)
    message_id, thread_id = make_voice_message(db, url)
    host = app_host(["email_poll_inbox", "transcribe_recording", "health", "health_ready", "metrics"],
                    **transcription_settings(openai_server))
    email_q, transcription_q = host.queue("EMAIL_QUEUE_NAME"), host.queue("TRANSCRIPTION_QUEUE_NAME")

    # The run: "poll now" (fans out one POLL_INBOX), one transcription, one invalid transcription message.
    host.enqueue("EMAIL_QUEUE_NAME", json.dumps({"action": "POLL_ALL_INBOXES"}))
    host.enqueue("TRANSCRIPTION_QUEUE_NAME", json.dumps(
        {"messageId": message_id, "threadId": thread_id, "audioUrl": url, "callSid": "CA-metrics"}))
    host.enqueue("TRANSCRIPTION_QUEUE_NAME", json.dumps({"messageId": "not-a-uuid", "audioUrl": url}))

    expected = {
        (email_q, "completed"): 2,
        (transcription_q, "completed"): 1,
        (transcription_q, "dead_lettered"): 1,
    }
    scraped = wait_for("the run's job counts on /api/metrics", lambda: (
        jobs := _jobs(_samples(host.get("metrics").body), {email_q, transcription_q})) == expected and jobs)
    assert scraped == expected

    answer = host.get("metrics")
    assert answer.status == 200
    assert answer.content_type.startswith("text/plain")
    samples = _samples(answer.body)
    assert samples[("banxway_job_duration_seconds_count", (("queue", email_q),))] == 2
    assert samples[("banxway_job_duration_seconds_count", (("queue", transcription_q),))] == 2
    assert samples[("banxway_email_messages_total", (("status", "stored"),))] == 2
    assert samples[("banxway_queue_depth", (("queue", f"{transcription_q}-poison"),))] == 1
    assert samples[("banxway_queue_depth", (("queue", f"{email_q}-poison"),))] == 0
    assert db.execute("SELECT count(*) AS n FROM communication_messages WHERE channel = 'EMAIL'").fetchone() == {"n": 2}

    assert host.get("metrics", key=None).status == 401
    assert host.get("health/ready", key=None).status == 401
    ready = host.get("health/ready")
    assert ready.status == 200, ready.body
    body = json.loads(ready.body)
    assert body["status"] == "ready"
    assert {name for name, check in body["checks"].items() if check["status"] == "up"} == set(body["checks"])
    assert host.get("health", key=None).status == 200
