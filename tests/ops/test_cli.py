"""The ops command line against Azurite: status, dead letters, retry that replays, purge, enqueue, poll-now."""

from __future__ import annotations

import io
import json
import uuid

from shared.errors import Reject
from shared.ops.cli import ExitCode, main
from shared.outcomes import Outcome
from shared.queues import poison_queue_name
from tests.support.ops import receive_one


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


def test_poll_now_enqueues_poll_inbox(make_ops_deps):
    deps = make_ops_deps(database=False)
    account = str(uuid.uuid4())
    assert _run(deps, "poll-now", account)[0] == ExitCode.OK
    body = json.loads(receive_one(deps, deps.settings.email_queue_name).get_body())
    assert body["payload"] == {"action": "POLL_INBOX", "data": {"accountId": account}}
    assert _run(deps, "poll-now", "not-a-uuid")[0] == ExitCode.INVALID_JOB


def test_reconcile_lists_nothing_on_a_fresh_database(make_ops_deps):
    deps = make_ops_deps()
    code, out, _ = _run(deps, "--json", "reconcile", "list")
    assert code == ExitCode.OK
    assert json.loads(out) == []


def test_missing_storage_settings_exit_unavailable(make_ops_deps):
    from shared.deps import Deps
    from shared.settings import Settings

    code, _, err = _run(Deps(Settings.from_env({})), "status")
    assert code == ExitCode.UNAVAILABLE
    assert "AzureWebJobsStorage" in err
