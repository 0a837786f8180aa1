"""Limiter accuracy and high-lane latency, end to end against the Exotel stand-in and the project's Redis.

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python -m bench.whatsapp_limiter [--messages 600] [--rate 10]

Phase 1 (accuracy): 4 worker processes x 10 threads send ``--messages`` bulk messages through the shared
slot limiter (``shared.coordination.ratelimit``) and the real Exotel client; the stand-in records each
request's arrival. Reports the max requests in any sliding 1 s window, the windows over the limit and the
mean rate (over the whole run, and "steady": without the first and last 40 requests, i.e. the start and the
drain, when there are fewer jobs than senders). Phase 2 (latency): 5,000 bulk messages queued, high-lane
messages enqueued at random (exponential gaps, mean 0.5 s; a fixed 0.5 s period would phase-lock with the
reserve's slots, one every 0.5 s at rate 10 and reserve 0.2); reports enqueue → arrival at the stand-in,
p50/p95, split into queue wait (enqueue → popped; the bench polls an empty list every 50 ms), limiter wait
(popped → slot) and send (slot → arrival). ``--bullmq`` also runs bench/bullmq/limiter.mjs on the same
stand-in and Redis (needs ``npm ci`` in bench/bullmq).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path

import redis
import requests

from devhost.standins.exotel import ExotelStandin, RateLimit, sliding_window_counts
from shared.coordination.ratelimit import Lane, RateLimited, SlotRateLimiter
from shared.whatsapp.exotel import ExotelClient, ExotelConfig, ExotelRateLimited, OutboundMessage, text_content

BULK, HIGH, SENT = "bench:wa:bulk", "bench:wa:high", "bench:wa:sent"


def _worker(url: str, standin_url: str, rate: float, threads: int, stop_at: float, name: str) -> None:  # noqa: PLR0917
    client = redis.Redis.from_url(url)
    limiter = SlotRateLimiter(client, f"bench-{name}", rate_per_s=rate, max_wait_s=2.0, reserve=0.2)
    config = ExotelConfig(standin_url, "banxway-test", "test-key", "test-token", "+911234567890")

    def run(queue: str, lane: Lane) -> None:
        exotel = ExotelClient(requests.Session(), config)
        while time.monotonic() < stop_at:
            raw = client.lpop(queue)
            if raw is None:
                time.sleep(0.05)
                continue
            job = json.loads(raw)
            popped = time.monotonic()
            while time.monotonic() < stop_at:
                try:
                    limiter.acquire(lane)
                    break
                except RateLimited as exc:  # in Functions: back on the queue with this visibility delay
                    time.sleep(exc.retry_after_s or 0.1)
            else:
                return
            woke = time.monotonic()
            try:
                exotel.send_one(OutboundMessage(job["to"], text_content("bench"), job["id"]))
            except ExotelRateLimited as exc:  # as the handler does: pause every sender, put the job back
                limiter.pause(exc.retry_after_s or 1.0)
                client.lpush(queue, raw)
                continue
            client.rpush(SENT, json.dumps({"id": job["id"], "lane": lane.value, "enqueued": job["t"],
                                           "popped": popped, "woke": woke}))

    workers = [threading.Thread(target=run, args=(BULK, Lane.BULK)) for _ in range(threads)]
    workers += [threading.Thread(target=run, args=(HIGH, Lane.HIGH)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _enqueue(client: redis.Redis, queue: str, count: int) -> None:
    # enqueue times are monotonic: spawned workers on Linux share CLOCK_MONOTONIC with this process
    now = time.monotonic()
    pipe = client.pipeline(transaction=False)
    for _ in range(count):
        pipe.rpush(queue, json.dumps({"id": str(uuid.uuid4()), "to": "+919876543210", "t": now}))
    pipe.execute()


def _accuracy(times: list[float], limit: float) -> dict[str, float]:
    counts = list(sliding_window_counts(times))
    span = max(times) - min(times)
    ordered = sorted(times)
    steady = ordered[40:-40] if len(ordered) > 200 else ordered
    steady_span = steady[-1] - steady[0]
    return {
        "requests": len(times),
        "max_in_any_1s_window": max(counts),
        "windows_over_limit": sum(1 for c in counts if c > limit),
        "mean_rate_per_s": round((len(times) - 1) / span, 3) if span else 0.0,
        "mean_pct_of_limit": round(100 * (len(times) - 1) / span / limit, 2) if span else 0.0,
        "steady_mean_pct_of_limit": round(100 * (len(steady) - 1) / steady_span / limit, 2) if steady_span else 0.0,
    }


def _run_phase(url: str, standin: ExotelStandin, rate: float, *, bulk: int, high_every_s: float | None,
               duration_s: float, name: str) -> dict[str, list[float]]:
    client = redis.Redis.from_url(url)
    client.delete(BULK, HIGH, SENT)
    _enqueue(client, BULK, bulk)
    stop_at = time.monotonic() + duration_s
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(url, standin.url, rate, 10, stop_at, name)) for _ in range(4)]
    for proc in procs:
        proc.start()
    parts: dict[str, list[float]] = {"total": [], "queue": [], "limiter": [], "send": []}
    if high_every_s:
        rng = random.Random(5)  # arrival times for a bench, not secrets
        time.sleep(3)  # let the bulk backlog fill the schedule first
        while time.monotonic() < stop_at - 5:
            _enqueue(client, HIGH, 1)
            time.sleep(rng.expovariate(1 / high_every_s))
    while time.monotonic() < stop_at and (client.llen(BULK) or client.llen(HIGH)):
        time.sleep(0.2)
    for proc in procs:
        proc.join()
    if high_every_s:
        arrivals = {r.body["whatsapp"]["messages"][0]["custom_data"]: r.arrived_monotonic_s for r in standin.sends()}
        for raw in client.lrange(SENT, 0, -1):
            sent = json.loads(raw)
            if sent["lane"] == "high":
                arrived = arrivals[sent["id"]]
                parts["total"].append(arrived - sent["enqueued"])
                parts["queue"].append(sent["popped"] - sent["enqueued"])
                parts["limiter"].append(sent["woke"] - sent["popped"])
                parts["send"].append(arrived - sent["woke"])
    client.delete(BULK, HIGH, SENT)
    return parts


def _machine() -> dict[str, str]:
    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10).stdout.strip()
        except OSError:
            return "n/a"

    return {"nproc": sh("nproc"), "python": sh("python3", "-V"), "redis": sh("redis-server", "--version")[:40],
            "node": sh("node", "-v"), "kernel": sh("uname", "-sr")}


def main() -> None:
    """Run both phases and print a JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--latency-s", type=float, default=40.0)
    parser.add_argument("--high-every-s", type=float, default=1.0,
                        help="mean gap between high-lane messages (the reserve holds 1 / (reserve x rate) = 0.5 s)")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--bullmq", action="store_true")
    parser.add_argument("--only-bullmq", action="store_true")
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    report: dict[str, object] = {"machine": _machine(), "rate_limit_per_s": args.rate}

    for _ in range(0 if args.only_bullmq else 1):
        _ours(url, args, report)
    if args.bullmq or args.only_bullmq:
        _bullmq(url, args, report)
    print(json.dumps(report, indent=2))


def _ours(url: str, args: argparse.Namespace, report: dict[str, object]) -> None:
    if not args.skip_accuracy:
        with ExotelStandin(rate_limit=RateLimit(int(args.rate), 1.0)) as standin:
            duration = args.messages / args.rate * 1.3 + 10
            _run_phase(url, standin, args.rate, bulk=args.messages, high_every_s=None, duration_s=duration,
                       name=uuid.uuid4().hex[:6])
            times = [r.arrived_monotonic_s for r in standin.sends()]
            report["ours"] = {**_accuracy(times, args.rate),
                              "standin_429s": sum(1 for r in standin.sends() if r.status == 429)}

    with ExotelStandin(rate_limit=RateLimit(int(args.rate), 1.0)) as standin:
        parts = _run_phase(url, standin, args.rate, bulk=5000, high_every_s=args.high_every_s,
                           duration_s=args.latency_s, name=uuid.uuid4().hex[:6])
        if parts["total"]:
            report["high_lane_latency_s"] = {"count": len(parts["total"])} | {
                name: {"p50": round(statistics.median(values), 3),
                       "p95": round(statistics.quantiles(values, n=20)[18], 3), "max": round(max(values), 3)}
                for name, values in parts.items()
            }
        times = [r.arrived_monotonic_s for r in standin.sends()]
        report["latency_phase"] = {**_accuracy(times, args.rate),
                                   "standin_429s": sum(1 for r in standin.sends() if r.status == 429),
                                   "high_every_s": args.high_every_s}



def _bullmq(url: str, args: argparse.Namespace, report: dict[str, object]) -> None:
    with ExotelStandin(rate_limit=RateLimit(int(args.rate), 1.0)) as standin:
        script = Path(__file__).parent / "bullmq" / "limiter.mjs"
        env = {**os.environ, "STANDIN_URL": standin.url, "REDIS_URL": url, "MESSAGES": str(args.messages),
               "RATE": str(int(args.rate))}
        subprocess.run(["node", str(script)], env=env, check=True, timeout=args.messages / args.rate * 3 + 60)
        times = [r.arrived_monotonic_s for r in standin.sends()]
        report["bullmq"] = {**_accuracy(times, args.rate),
                            "standin_429s": sum(1 for r in standin.sends() if r.status == 429)}


if __name__ == "__main__":
    main()
