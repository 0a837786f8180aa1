"""The ops command line: ``python -m shared.ops <command>`` (docs/operations.md).

Reads the same settings as the workers from the environment (``AzureWebJobsStorage`` or the identity-based
``AzureWebJobsStorage__queueServiceUri``; ``DATABASE_URL`` or the Supabase pair for ``reconcile``), so it
works against Azurite and a real account alike. Results go to stdout (``--json`` for scripts), progress
and errors to stderr. Exit codes: see ``ExitCode``.

The storage clients the command line builds retry twice, a second apart, with short timeouts
(``STORAGE_RETRY_TOTAL``, ``STORAGE_CONNECTION_TIMEOUT_S``): an unreachable account fails in seconds
rather than after the SDK's default backoff (about 90 s).
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ClientAuthenticationError

from shared.deps import Deps
from shared.errors import ConfigurationError
from shared.jobs import JobKind, JobValidationError, parse_job
from shared.ops.deadletters import Selector, list_dead_letters, purge_dead_letters, retry_dead_letters
from shared.ops.queue_stats import queue_stats, worker_queues
from shared.redaction import redact
from shared.settings import Settings
from shared.store.errors import StoreError, StoreUnavailable
from shared.whatsapp.handler import queue_for_priority

if TYPE_CHECKING:
    pass

__all__ = ["STORAGE_CONNECTION_TIMEOUT_S", "STORAGE_RETRY_TOTAL", "CliDeps", "ExitCode", "build_parser", "main"]

#: Retries of one storage request in the command line (the SDK's default is 10, with long backoffs).
STORAGE_RETRY_TOTAL = 2
STORAGE_RETRY_BACKOFF_S = 1
STORAGE_CONNECTION_TIMEOUT_S = 5.0
STORAGE_READ_TIMEOUT_S = 30.0


class ExitCode(enum.IntEnum):
    """What scripts can rely on."""

    OK = 0
    FAILED = 1  # the operation failed part-way (see stderr)
    USAGE = 2  # bad arguments (argparse)
    NOTHING_MATCHED = 3  # retry/purge/reconcile found nothing to act on; poll-now: no such pollable account
    UNAVAILABLE = 4  # storage, Redis or the database unreachable, or settings missing
    INVALID_JOB = 5  # enqueue: the JSON is not a valid job for that queue
    DEAD_LETTERS_PRESENT = 6  # status --check: some -poison queue is not empty
    NOT_CONFIRMED = 7  # purge without --yes


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_s(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError("a duration like 90s, 15m, 2h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _queue_map(settings: Settings) -> dict[str, tuple[str, JobKind]]:
    """Short names and full queue names → (queue, job kind)."""
    pairs: list[tuple[str, str, JobKind]] = [
        ("email", settings.email_queue_name, "email"),
        ("whatsapp", settings.whatsapp_queue_name, "whatsapp"),
        ("whatsapp-priority", settings.whatsapp_priority_queue_name, "whatsapp"),
        ("transcription", settings.transcription_queue_name, "transcription"),
    ]
    found: dict[str, tuple[str, JobKind]] = {}
    for short, name, kind in pairs:
        found[short] = found[name] = (name, kind)
    return found


class _UnknownQueue(Exception):
    pass


def _resolve_queue(settings: Settings, name: str) -> tuple[str, JobKind]:
    mapping = _queue_map(settings)
    if name.removesuffix("-poison") in mapping:
        return mapping[name.removesuffix("-poison")]
    raise _UnknownQueue(f"unknown queue {name!r}; one of: {', '.join(sorted(mapping))}")


def _out(stream: IO[str], args: argparse.Namespace, data: Any, lines: Callable[[], list[str]]) -> None:
    if args.json:
        stream.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        stream.write("".join(line + "\n" for line in lines()))


def _progress(err: IO[str], verb: str) -> Callable[[int], None]:
    def report(done: int) -> None:
        if done == 1 or done % 25 == 0:
            err.write(f"{verb}: {done} so far\n")
            err.flush()

    return report


class CliDeps(Deps):
    """``Deps`` whose storage clients give up after ``STORAGE_RETRY_TOTAL`` quick retries (an operator waits)."""

    def storage_client_options(self) -> dict[str, Any]:
        from azure.storage.queue import LinearRetry

        return {
            "retry_policy": LinearRetry(
                backoff=STORAGE_RETRY_BACKOFF_S, random_jitter_range=0, retry_total=STORAGE_RETRY_TOTAL
            ),
            "connection_timeout": STORAGE_CONNECTION_TIMEOUT_S,
            "read_timeout": STORAGE_READ_TIMEOUT_S,
        }


# --- commands ----------------------------------------------------------------------------------------


def _cmd_status(deps: Deps, args: argparse.Namespace, out: IO[str], err: IO[str]) -> ExitCode:  # noqa: ARG001
    stats = queue_stats(deps.queue_service, worker_queues(deps.settings))
    rows = [asdict(s) for s in stats]

    def lines() -> list[str]:
        table = [f"{'queue':<40} {'depth':>7} {'oldest age':>12}"]
        for s in stats:
            age = "-" if s.oldest_age_s is None else f"{s.oldest_age_s:.0f}s"
            table.append(f"{s.name:<40} {s.depth if s.exists else '-':>7} {age:>12}")
        return table

    _out(out, args, rows, lines)
    if args.check and any(s.is_poison and s.depth > 0 for s in stats):
        return ExitCode.DEAD_LETTERS_PRESENT
    return ExitCode.OK


def _cmd_dead_letters(deps: Deps, args: argparse.Namespace, out: IO[str], err: IO[str]) -> ExitCode:  # noqa: ARG001
    names = [_resolve_queue(deps.settings, args.queue)[0]] if args.queue else worker_queues(
        deps.settings, include_poison=False
    )
    now = datetime.now(UTC)
    rows = []
    for name in names:
        for entry in list_dead_letters(deps.queues, name, limit=args.limit):
            rows.append({
                "queue": name, "message_id": entry.message_id, "job_id": entry.job_id, "reason": entry.reason,
                "error_class": entry.letter.error_class, "attempts": entry.letter.attempts,
                "age_s": entry.age_s(now), "dequeue_count": entry.dequeue_count,
            })

    def lines() -> list[str]:
        if not rows:
            return ["no dead letters"]
        return [
            f"{r['queue']}  {r['message_id']}  job={r['job_id']}  age={(r['age_s'] or 0):.0f}s  "
            f"attempts={r['attempts']}  {r['reason']}"
            for r in rows
        ]

    _out(out, args, rows, lines)
    return ExitCode.OK


def _selector(args: argparse.Namespace) -> Selector:
    return Selector(count=args.count, older_than_s=args.older_than, ids=frozenset(args.id or ()))


def _cmd_retry(deps: Deps, args: argparse.Namespace, out: IO[str], err: IO[str]) -> ExitCode:
    queue = _resolve_queue(deps.settings, args.queue)[0]
    moved = retry_dead_letters(
        deps.queues, queue, _selector(args), progress=_progress(err, "retried"), blob_service=deps.blob_service
    )
    _out(out, args, {"queue": queue, "retried": moved}, lambda: [f"retried {moved} dead letter(s) onto {queue}"])
    return ExitCode.OK if moved else ExitCode.NOTHING_MATCHED


def _cmd_purge(deps: Deps, args: argparse.Namespace, out: IO[str], err: IO[str]) -> ExitCode:
    queue = _resolve_queue(deps.settings, args.queue)[0]
    if not args.yes:
        err.write(f"purge deletes dead letters of {queue}-poison for good; add --yes to confirm\n")
        return ExitCode.NOT_CONFIRMED
    deleted = purge_dead_letters(
        deps.queues, queue, _selector(args), progress=_progress(err, "purged"), blob_service=deps.blob_service
    )
    _out(out, args, {"queue": queue, "purged": deleted}, lambda: [f"purged {deleted} dead letter(s) of {queue}"])
    return ExitCode.OK if deleted else ExitCode.NOTHING_MATCHED


def _read_json_arg(value: str) -> str:
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8")
    return value


def _cmd_enqueue(deps: Deps, args: argparse.Namespace, out: IO[str], err: IO[str]) -> ExitCode:
    queue, kind = _resolve_queue(deps.settings, args.queue)
    text = _read_json_arg(args.job)
    try:
        job = parse_job(kind, text)  # an envelope, or a bare payload that gets one
    except JobValidationError as exc:
        err.write(f"{exc}\n")
        return ExitCode.INVALID_JOB
    if args.reset_attempt:
        job = job.model_copy(update={"attempt": 1})
    if kind == "whatsapp" and queue == deps.settings.whatsapp_queue_name:
        # As the main API does: a high priority (1 = highest) goes to the priority lane.
        queue = queue_for_priority(job.payload.priority, deps.settings)
    deps.queues.send(queue, job.to_json(), delay_s=args.delay_s)
    _out(out, args, {"queue": queue, "job_id": job.id}, lambda: [f"enqueued job {job.id} on {queue}"])
    return ExitCode.OK


def _cmd_poll_now(deps: Deps, args: argparse.Namespace, out: IO[str], err: IO[str]) -> ExitCode:
    queue = deps.settings.email_queue_name
    payload = {"action": "POLL_INBOX", "data": {"accountId": args.account_id}}
    try:
        job = parse_job("email", json.dumps(payload))
    except JobValidationError as exc:
        err.write(f"{exc}\n")
        return ExitCode.INVALID_JOB
    if not args.no_check:
        pollable = {account.id for account in deps.store.list_pollable_accounts()}
        if str(job.payload.data.account_id).lower() not in pollable:
            err.write(
                f"no active, IMAP-enabled email account with id {args.account_id} "
                "(missing, inactive or IMAP disabled); nothing enqueued\n"
            )
            return ExitCode.NOTHING_MATCHED
    deps.queues.send(queue, job.to_json())
    _out(out, args, {"queue": queue, "job_id": job.id}, lambda: [f"poll of {args.account_id} enqueued ({job.id})"])
    return ExitCode.OK


def _cmd_reconcile(deps: Deps, args: argparse.Namespace, out: IO[str], err: IO[str]) -> ExitCode:  # noqa: ARG001
    store = deps.store
    if args.action == "list":
        pending = store.list_sends_needing_reconciliation(limit=args.limit)
        rows = [asdict(p) for p in pending]
        _out(out, args, rows, lambda: [
            f"{p.message_id}  channel={p.channel}  sid={p.provider_sid or '-'}  attempts={p.attempts}  "
            f"claimed_at={p.claimed_at}  last_error={p.last_error or '-'}"
            for p in pending
        ] or ["nothing to reconcile"])
        return ExitCode.OK
    result = store.resolve_send(args.message_id, resolution=args.resolution, provider_sid=args.sid, error=args.error)
    data = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(result).items()}
    _out(out, args, data, lambda: [f"{args.message_id}: {data}"])
    outcome = str(data.get("outcome", ""))
    return ExitCode.NOTHING_MATCHED if outcome in ("not_claimed", "missing") else ExitCode.OK


# --- parser and entry point --------------------------------------------------------------------------


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "queue",
        help="email, whatsapp (the bulk lane), whatsapp-priority (the high lane), transcription (or a full name)",
    )
    parser.add_argument("--count", type=int, help="at most this many (oldest first)")
    parser.add_argument("--older-than", type=_duration_s, metavar="DURATION", help="dead-lettered before, e.g. 2h")
    parser.add_argument("--id", action="append", help="a job id or poison message id (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``python -m shared.ops``."""
    parser = argparse.ArgumentParser(prog="python -m shared.ops", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    sub = parser.add_subparsers(dest="command", required=True)

    status = sub.add_parser("status", help="depth and oldest age of every queue and -poison queue")
    status.add_argument("--check", action="store_true", help=f"exit {ExitCode.DEAD_LETTERS_PRESENT} on dead letters")
    status.set_defaults(run=_cmd_status)

    dead = sub.add_parser("dead-letters", help="list dead letters with their reasons")
    dead.add_argument("queue", nargs="?", help="one queue (default: all)")
    dead.add_argument(
        "--limit", type=int, default=32,
        help="per queue (default 32: what one peek returns; more are received briefly and made visible again)",
    )
    dead.set_defaults(run=_cmd_dead_letters)

    retry = sub.add_parser("retry", help="move dead letters back onto their queue, attempts reset to 1")
    _add_selection(retry)
    retry.set_defaults(run=_cmd_retry)

    purge = sub.add_parser("purge", help="delete dead letters for good")
    _add_selection(purge)
    purge.add_argument("--yes", action="store_true", help="confirm")
    purge.set_defaults(run=_cmd_purge)

    enqueue = sub.add_parser("enqueue", help="validate a job (JSON, @file or - for stdin) and send it")
    enqueue.add_argument("queue")
    enqueue.add_argument("job", help="the job JSON: an envelope or a bare payload")
    enqueue.add_argument("--delay-s", type=float, default=0.0, help="visible after this many seconds")
    enqueue.add_argument("--reset-attempt", action="store_true", help="send an envelope with attempt 1")
    enqueue.set_defaults(run=_cmd_enqueue)

    poll = sub.add_parser("poll-now", help="enqueue POLL_INBOX for one active, IMAP-enabled inbox")
    poll.add_argument("account_id")
    poll.add_argument("--no-check", action="store_true", help="enqueue without looking the account up")
    poll.set_defaults(run=_cmd_poll_now)

    reconcile = sub.add_parser("reconcile", help="sends whose outcome is unknown")
    rsub = reconcile.add_subparsers(dest="action", required=True)
    rlist = rsub.add_parser("list")
    rlist.add_argument("--limit", type=int, default=100)
    resolve = rsub.add_parser("resolve")
    resolve.add_argument("message_id")
    resolve.add_argument("resolution", choices=["sent", "failed", "not_sent"])
    resolve.add_argument("--sid", help="the provider's message sid (resolution sent)")
    resolve.add_argument("--error", help="why (resolution failed)")
    reconcile.set_defaults(run=_cmd_reconcile)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    deps: Deps | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run one command; returns its exit code (``ExitCode``). Tests pass their own ``deps`` and streams."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        deps = deps or CliDeps(Settings.from_env())
        code: ExitCode = args.run(deps, args, stdout, stderr)
    except _UnknownQueue as exc:
        stderr.write(f"{exc}\n")
        return ExitCode.USAGE
    except ConfigurationError as exc:
        stderr.write(f"{exc}\n")
        return ExitCode.UNAVAILABLE
    except (ClientAuthenticationError, AzureError, StoreError, StoreUnavailable, OSError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        stderr.write(redact(f"unavailable: {type(exc).__name__}: {first_line}") + "\n")
        return ExitCode.UNAVAILABLE
    return int(code)

