"""The ops command line against Azurite and PostgreSQL: status, dead letters, retry, purge, enqueue, poll-now,
reconcile; and its capped storage retries."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

from shared.errors import Reject
from shared.jobs import MAX_MESSAGE_BYTES
from shared.ops.cli import STORAGE_RETRY_TOTAL, ExitCode, main
from shared.ops.deadletters import list_dead_letters
from shared.outcomes import Outcome
from shared.queues import poison_queue_name
from shared.store import SendOutcome
from tests.support.host import REPO_ROOT
from tests.support.ops import HangUpServer, insert_email_account, insert_outbound_message, receive_one


def _send_payload():
    return {
        "action": "SEND_MESSAGE",
        "data": {"threadId": str(uuid.uuid4()), "to": "+919876543210", "messageId": str(uuid.uuid4()), "text": "hi"},
    }


def _run(deps, *argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), deps=deps, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _dead_letter_one(deps, queue, *, attempt_handler=None):
    envelope = deps.queues.enqueue(queue, "whatsapp", _send_payload())
    def reject(_job):
        raise Reject("exotel said: invalid template")
    result = deps.run_message(receive_one(deps, queue), kind="whatsapp", queue=queue,
                              handler=attempt_handler or reject)
    assert result.outcome is Outcome.DEAD_LETTERED
    return envelope


def test_retry_replays_a_dead_letter_that_then_succeeds(make_ops_deps):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    envelope = _dead_letter_one(deps, queue)

    code, out, _ = _run(deps, "--json", "dead-letters", "whatsapp")
    assert code == ExitCode.OK
    [row] = json.loads(out)
    assert row["job_id"] == envelope.id
    assert row["reason"] == "exotel said: invalid template"

    code, out, err = _run(deps, "retry", "whatsapp", "--id", envelope.id)
    assert code == ExitCode.OK, err
    assert "retried 1" in out

    seen = []
    message = receive_one(deps, queue)
    result = deps.run_message(message, kind="whatsapp", queue=queue, handler=seen.append)
    assert result.outcome is Outcome.COMPLETED
    assert seen[0].id == envelope.id
    assert seen[0].attempt == 1
    _, out, _ = _run(deps, "--json", "dead-letters", "whatsapp")
    assert json.loads(out) == []


def test_retry_resets_attempts_and_handles_bare_host_made_dead_letters(make_ops_deps):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    exhausted = deps.queues.enqueue(queue, "whatsapp", _send_payload()).model_copy(update={"attempt": 6})
    receive_one(deps, queue)
    deps.queues.dead_letter(queue, exhausted.to_json(), reason="retries exhausted", error_class="RetryLater",
                            attempts=6, job_id=exhausted.id)
    # What the host does after maxDequeueCount: the original message, unwrapped, on <queue>-poison.
    bare = json.dumps(_send_payload())
    deps.queues.send(poison_queue_name(queue), bare)

    code, out, _ = _run(deps, "--json", "dead-letters", "whatsapp")
    rows = json.loads(out)
    assert len(rows) == 2
    assert any("maxDequeueCount" in r["reason"] for r in rows)

    code, out, err = _run(deps, "retry", "whatsapp")
    assert code == ExitCode.OK, err
    bodies = [json.loads(receive_one(deps, queue).get_body()) for _ in range(2)]
    envelopes = [b for b in bodies if "payload" in b]
    assert envelopes[0]["attempt"] == 1
    assert json.dumps(next(b for b in bodies if "payload" not in b)) == bare


def test_retry_by_count_and_by_age(make_ops_deps):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    for _ in range(3):
        _dead_letter_one(deps, queue)
    assert _run(deps, "retry", "whatsapp", "--older-than", "1h")[0] == ExitCode.NOTHING_MATCHED
    _, out, _ = _run(deps, "--json", "retry", "whatsapp", "--count", "2")
    assert json.loads(out)["retried"] == 2
    _, out, _ = _run(deps, "--json", "status")
    depths = {r["name"]: r["depth"] for r in json.loads(out)}
    assert depths[queue] == 2
    assert depths[poison_queue_name(queue)] == 1
    assert _run(deps, "status", "--check")[0] == ExitCode.DEAD_LETTERS_PRESENT


def test_purge_needs_confirmation(make_ops_deps):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    _dead_letter_one(deps, queue)
    assert _run(deps, "purge", "whatsapp")[0] == ExitCode.NOT_CONFIRMED
    code, _, _ = _run(deps, "purge", "whatsapp", "--yes")
    assert code == ExitCode.OK
    assert _run(deps, "status", "--check")[0] == ExitCode.OK


def test_enqueue_validates_and_sends(make_ops_deps):
    deps = make_ops_deps(database=False)
    code, _, err = _run(deps, "enqueue", "whatsapp", '{"action": "SEND_MESSAGE", "data": {"to": "12"}}')
    assert code == ExitCode.INVALID_JOB
    assert "data.threadId" in err
    code, out, _ = _run(deps, "--json", "enqueue", "whatsapp-priority", json.dumps(_send_payload()))
    assert code == ExitCode.OK
    sent = json.loads(receive_one(deps, deps.settings.whatsapp_priority_queue_name).get_body())
    assert sent["id"] == json.loads(out)["job_id"]
    assert _run(deps, "enqueue", "nope", "{}")[0] == ExitCode.USAGE


def test_enqueue_sends_a_high_priority_whatsapp_job_to_the_priority_lane(make_ops_deps):
    deps = make_ops_deps(database=False)
    urgent = dict(_send_payload(), priority=1)
    code, out, _ = _run(deps, "--json", "enqueue", "whatsapp", json.dumps(urgent))
    assert code == ExitCode.OK
    assert json.loads(out)["queue"] == deps.settings.whatsapp_priority_queue_name
    sent = json.loads(receive_one(deps, deps.settings.whatsapp_priority_queue_name).get_body())
    assert sent["payload"]["priority"] == 1
    code, out, _ = _run(deps, "--json", "enqueue", "whatsapp", json.dumps(dict(_send_payload(), priority=7)))
    assert json.loads(out)["queue"] == deps.settings.whatsapp_queue_name


def test_poll_now_enqueues_poll_inbox_for_an_active_imap_enabled_account(make_ops_deps, database_url):
    deps = make_ops_deps()
    account = insert_email_account(database_url)
    assert _run(deps, "poll-now", account)[0] == ExitCode.OK
    body = json.loads(receive_one(deps, deps.settings.email_queue_name).get_body())
    assert body["payload"] == {"action": "POLL_INBOX", "data": {"accountId": account}}
    assert _run(deps, "poll-now", "not-a-uuid")[0] == ExitCode.INVALID_JOB


def test_poll_now_refuses_missing_inactive_and_imap_disabled_accounts(make_ops_deps, database_url):
    deps = make_ops_deps()
    for account in (str(uuid.uuid4()), insert_email_account(database_url, active=False),
                    insert_email_account(database_url, imap_enabled=False)):
        code, _, err = _run(deps, "poll-now", account)
        assert code == ExitCode.NOTHING_MATCHED
        assert f"no active, IMAP-enabled email account with id {account}" in err
    _, out, _ = _run(deps, "--json", "status")
    assert {r["name"]: r["depth"] for r in json.loads(out)}.get(deps.settings.email_queue_name, 0) == 0
    assert _run(deps, "poll-now", "--no-check", str(uuid.uuid4()))[0] == ExitCode.OK


def test_reconcile_lists_nothing_on_a_fresh_database(make_ops_deps):
    deps = make_ops_deps()
    code, out, _ = _run(deps, "--json", "reconcile", "list")
    assert code == ExitCode.OK
    assert json.loads(out) == []


def test_reconcile_lists_unknown_sends_and_resolves_them(make_ops_deps, database_url):
    deps = make_ops_deps()
    store = deps.store
    unknown, released = insert_outbound_message(database_url), insert_outbound_message(database_url)
    for message_id in (unknown, released):
        assert store.claim_send(message_id, owner="attempt-1", claim_s=60).outcome is SendOutcome.CLAIMED
        assert store.mark_send_unknown(message_id, error="read timeout after sending")

    code, out, _ = _run(deps, "--json", "reconcile", "list")
    assert code == ExitCode.OK
    rows = {r["message_id"]: r for r in json.loads(out)}
    assert set(rows) == {unknown, released}
    assert rows[unknown]["last_error"] == "read timeout after sending"

    code, out, err = _run(deps, "--json", "reconcile", "resolve", unknown, "sent", "--sid", "SM-from-exotel-log")
    assert code == ExitCode.OK, err
    assert json.loads(out)["outcome"] == "sent"
    assert _run(deps, "reconcile", "resolve", released, "not_sent")[0] == ExitCode.OK
    assert store.list_sends_needing_reconciliation() == []
    assert store.claim_send(unknown, owner="attempt-2", claim_s=60).outcome is SendOutcome.ALREADY_SENT
    assert store.claim_send(released, owner="attempt-2", claim_s=60).outcome is SendOutcome.CLAIMED
    assert _run(deps, "reconcile", "resolve", str(uuid.uuid4()), "failed", "--error", "x")[0] == (
        ExitCode.NOTHING_MATCHED
    )


def test_retry_of_a_blob_backed_dead_letter_replays_it_and_deletes_the_blob(make_ops_deps, blob_service):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    # A body that fits a queue message on its own but not inside the dead-letter wrapper (as the host might
    # have received it: any text, not necessarily an envelope).
    job_id = str(uuid.uuid4())
    body = "x" * (MAX_MESSAGE_BYTES - 100)
    deps.queues.dead_letter(queue, body, reason="too big to fail", error_class="Reject", attempts=1, job_id=job_id)
    [entry] = list_dead_letters(deps.queues, queue)
    assert entry.letter.body is None
    container, _, name = entry.letter.body_blob.partition("/")
    blob = blob_service.get_blob_client(container, name)
    assert blob.exists()

    code, _, err = _run(deps, "retry", "whatsapp", "--id", job_id)
    assert code == ExitCode.OK, err
    assert receive_one(deps, queue).get_body() == body.encode()
    assert not blob.exists()


def test_purge_deletes_the_overflow_blob_too(make_ops_deps, blob_service):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    deps.queues.dead_letter(queue, "y" * (MAX_MESSAGE_BYTES + 10), reason="big", error_class="Reject", attempts=1)
    [entry] = list_dead_letters(deps.queues, queue)
    container, _, name = entry.letter.body_blob.partition("/")
    assert _run(deps, "purge", "whatsapp", "--yes")[0] == ExitCode.OK
    assert not blob_service.get_blob_client(container, name).exists()


def test_dead_letters_lists_more_than_one_peek_and_leaves_them_all_visible(make_ops_deps):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    job_ids = {str(uuid.uuid4()) for _ in range(40)}
    for job_id in job_ids:
        deps.queues.dead_letter(queue, "{}", reason="bulk", error_class="Reject", attempts=1, job_id=job_id)

    assert len(json.loads(_run(deps, "--json", "dead-letters", "whatsapp")[1])) == 32  # the default: one peek
    code, out, _ = _run(deps, "--json", "dead-letters", "whatsapp", "--limit", "100")
    assert code == ExitCode.OK
    assert {r["job_id"] for r in json.loads(out)} == job_ids
    # Nothing stayed hidden: listing again right away sees all 40, and retry moves all 40.
    assert {r["job_id"] for r in json.loads(_run(deps, "--json", "dead-letters", "whatsapp", "--limit", "100")[1])} \
        == job_ids
    assert json.loads(_run(deps, "--json", "retry", "whatsapp")[1])["retried"] == 40


def test_an_unreachable_storage_account_fails_after_the_capped_retries(tmp_path):
    server = HangUpServer()
    try:
        connection = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=ZmFrZS1rZXk=;"
            f"QueueEndpoint=http://127.0.0.1:{server.port}/devstoreaccount1;"
            f"BlobEndpoint=http://127.0.0.1:{server.port}/devstoreaccount1;"
        )
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT), "AzureWebJobsStorage": connection}
        result = subprocess.run([sys.executable, "-m", "shared.ops", "status"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60, check=False)
    finally:
        server.close()
    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr
    assert "unavailable:" in result.stderr
    # One request and STORAGE_RETRY_TOTAL retries, not the SDK's default of ten (about 90 s of backoff).
    assert 1 <= server.accepted <= 1 + STORAGE_RETRY_TOTAL


def test_missing_storage_settings_exit_unavailable(make_ops_deps):
    from shared.deps import Deps
    from shared.settings import Settings

    code, _, err = _run(Deps(Settings.from_env({})), "status")
    assert code == ExitCode.UNAVAILABLE
    assert "AzureWebJobsStorage" in err


def test_a_message_the_host_could_not_decode_does_not_break_the_poison_queue_tools(make_ops_deps):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    raw = json.dumps(_send_payload())  # sent without base64: the host moves it to -poison as stored
    poison = deps.queue_service.get_queue_client(poison_queue_name(queue))
    poison.create_queue()
    poison.send_message(raw)
    code, out, _ = _run(deps, "--json", "dead-letters", "whatsapp")
    assert code == ExitCode.OK
    (row,) = json.loads(out)
    assert row["reason"].startswith("moved by the Functions host")
    assert _run(deps, "retry", "whatsapp")[0] == ExitCode.OK
    replayed = receive_one(deps, queue)  # now base64-encoded, as the host expects
    assert json.loads(replayed.get_body()) == json.loads(raw)


def test_a_replayed_dead_letter_starts_a_fresh_age(make_ops_deps):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    old = {"v": 1, "id": "old-job", "type": "whatsapp", "attempt": 4, "created_at": "2026-01-01T00:00:00+00:00",
           "payload": _send_payload()}
    deps.queues.dead_letter(queue, json.dumps(old), reason="deferred too long", error_class="RateLimited",
                            attempts=4, job_id="old-job")
    assert _run(deps, "retry", "whatsapp")[0] == ExitCode.OK
    replayed = json.loads(receive_one(deps, queue).get_body())
    assert replayed["attempt"] == 1
    assert replayed["created_at"] > "2026-12-01"


def test_a_body_that_is_not_utf8_is_dead_lettered_and_replayed_byte_for_byte(make_ops_deps):
    deps = make_ops_deps(database=False)
    queue = deps.settings.whatsapp_queue_name
    body = b'{"action": "SEND_MESSAGE", "note": "caf\xe9"}'  # Latin-1, not UTF-8
    result = deps.run_message(_Message("m-1", body), kind="whatsapp", queue=queue, handler=lambda _job: None)
    assert result.outcome is Outcome.DEAD_LETTERED
    assert _run(deps, "retry", "whatsapp")[0] == ExitCode.OK
    assert receive_one(deps, queue).get_body() == body


class _Message:
    def __init__(self, message_id, body):
        self.id = message_id
        self._body = body

    def get_body(self):
        return self._body
