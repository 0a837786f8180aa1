"""The transcription job end to end against the real store (PostgreSQL), Redis and the two stand-ins."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from azure.storage.queue import QueueServiceClient
from psycopg.rows import dict_row

from devhost.standins.openai import MAX_BODY_BYTES, OpenAIServer
from devhost.standins.recordings import RecordingServer
from shared.coordination.semaphore import Semaphore, SemaphoreFull
from shared.errors import ConfigurationError, Reject, RetryLater
from shared.jobs import Envelope, TranscriptionJob, new_envelope
from shared.outcomes import Outcome, RetryPolicy, run_job
from shared.queues import QueueOps
from shared.settings import Settings
from shared.store import build_store
from shared.transcription import handler as handler_module
from shared.transcription.audio import AudioLimits
from shared.transcription.errors import TranscriptionRateLimited
from shared.transcription.handler import TranscriptionServices, handle_transcription
from shared.transcription.openai_client import Segment, confidence_from_segments
from shared.transcription.wiring import SLOTS_NAME, build_transcription_services
from tests.support.transcription import OPENAI_KEY, RECORDING_PASSWORD, RECORDING_USER

Db = psycopg.Connection[dict[str, Any]]


class RecordingMetrics:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict[str, Any]]] = []

    def inc(self, name: str, amount: float = 1, **labels: Any) -> None:
        self.calls.append((name, amount, labels))

    def observe(self, name: str, value: float, **labels: Any) -> None:
        self.calls.append((name, value, labels))


@pytest.fixture
def db(database_url: str) -> Iterator[Db]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def settings(database_url: str, redis_url: str, openai_server: OpenAIServer) -> Settings:
    return Settings.from_env({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "RECORDING_ALLOWED_HOSTS": "recordings.exotel.com", "RECORDING_ALLOW_HTTP_HOSTS": "127.0.0.1",
        "EXOTEL_API_KEY": RECORDING_USER, "EXOTEL_TOKEN": RECORDING_PASSWORD,
        "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_server.base_url, "OPENAI_TIMEOUT_S": "60",
        "TRANSCRIPTION_MAX_IN_FLIGHT": "3", "JOB_MAX_ATTEMPTS": "3",
    })


@pytest.fixture
def services(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[TranscriptionServices]:
    store = build_store(settings)
    built = build_transcription_services(settings, store=store, redis=redis_client, metrics=RecordingMetrics())
    temp_root = tmp_path / "work"
    temp_root.mkdir()
    yield dataclasses.replace(built, temp_root=temp_root)
    store.close()


@pytest.fixture
def make_voice_message(db: Db) -> Callable[[], str]:
    """A VOICE row as the call webhook writes it: call summary in content, call facts in metadata."""

    def make() -> str:
        thread = db.execute("INSERT INTO communication_threads (reference, type, primary_channel) VALUES"
                            " ('BX-1999-' || gen_random_uuid(), 'QUERY', 'VOICE') RETURNING id").fetchone()
        assert thread is not None
        row = db.execute(
            "INSERT INTO communication_messages (thread_id, channel, direction, status, content, metadata,"
            " transcription_status) VALUES (%s, 'VOICE', 'INBOUND', 'PENDING', 'Call completed. Duration: 60s',"
            " %s, 'PENDING') RETURNING id",
            [thread["id"], psycopg.types.json.Jsonb({"recordingUrl": "https://r/x.mp3", "duration": 60,
                                                     "direction": "inbound"})],
        ).fetchone()
        assert row is not None
        return str(row["id"])

    return make


def job_for(message_id: str, audio_url: str, *, attempt: int = 1, job_id: str | None = None
            ) -> Envelope[TranscriptionJob]:
    job = new_envelope("transcription", {"messageId": message_id, "threadId": str(uuid.uuid4()),
                                         "audioUrl": audio_url, "callSid": "CA123"}, job_id=job_id)
    return job.model_copy(update={"attempt": attempt})


def row(db: Db, message_id: str) -> dict[str, Any]:
    found = db.execute("SELECT * FROM communication_messages WHERE id = %s", [message_id]).fetchone()
    assert found is not None
    return found


def test_sixty_minute_recording_over_25_mib_is_transcoded_split_and_stitched_in_order(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    sixty_minute_wav: Path, make_voice_message: Callable[[], str], db: Db,
) -> None:
    assert sixty_minute_wav.stat().st_size > MAX_BODY_BYTES
    url = recording_server.add_file("/exotelrecordings/ACCOUNT/long.wav", sixty_minute_wav)
    message = make_voice_message()
    # A 20-minute cap per upload (as for gpt-4o models, 1500 s) forces the split; size alone would not.
    split = dataclasses.replace(services, audio_limits=AudioLimits(max_chunk_s=1200))

    handle_transcription(job_for(message, url), split)

    uploads = openai_server.requests
    assert [u["filename"] for u in uploads] == ["recording.mp3"] * 3
    assert all(u["size"] < MAX_BODY_BYTES for u in uploads)
    assert [round(u["duration_s"]) for u in uploads] == [1200, 1200, 1200]
    assert uploads[1]["prompt"]  # the previous chunk's tail text carries context across the cut
    found = row(db, message)
    assert found["transcription_status"] == "COMPLETED"
    assert found["transcription_language"] == "en"
    details = found["metadata"]["transcription"]
    segments = details["segments"]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert starts[0] == 0.0
    assert segments[-1]["end"] == pytest.approx(3600.0, abs=0.5)
    assert details["duration"] == pytest.approx(3600.0, abs=0.5)
    assert details["chunks"] == 3
    for boundary in (1200.0, 2400.0):  # each later chunk's first segment starts at its offset
        assert any(abs(s["start"] - boundary) < 0.1 for s in segments)
    assert all(a["end"] <= b["start"] + 0.1 for a, b in itertools.pairwise(segments))
    assert found["content"].startswith("Audio from 0 to 10 seconds.")
    expected = confidence_from_segments([Segment(s["start"], s["end"], s["text"], s["avg_logprob"])
                                         for s in segments])
    assert float(found["transcription_confidence"]) == expected
    assert expected not in (None, 0.9)
    metadata = found["metadata"]
    assert metadata["recordingUrl"] == "https://r/x.mp3"
    assert metadata["call"]["summary"] == "Call completed. Duration: 60s"
    assert list(services.temp_root.iterdir()) == []  # type: ignore[union-attr]


def test_download_without_credentials_ends_failed_as_exotel_refuses_it(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    make_voice_message: Callable[[], str], db: Db,
) -> None:
    message = make_voice_message()
    anonymous = dataclasses.replace(services, credentials=None)

    with pytest.raises(Reject, match="refused access \\(401\\)"):
        handle_transcription(job_for(message, recording_server.recording_url("c", duration_s=5)), anonymous)

    found = row(db, message)
    assert found["transcription_status"] == "FAILED"
    assert "recording_access_denied" in found["metadata"]["transcription"]["error"]
    assert found["metadata"]["recordingUrl"] == "https://r/x.mp3"
    assert openai_server.requests == []


@pytest.mark.parametrize(("url", "reason"), [
    ("https://evil.example/r.mp3", "'evil.example' is not in RECORDING_ALLOWED_HOSTS"),
    ("http://169.254.169.254/latest/meta-data/", "'169.254.169.254' is not in RECORDING_ALLOWED_HOSTS"),
    ("http://localhost:{port}/exotelrecordings/A/x.wav", "'localhost' is not in RECORDING_ALLOWED_HOSTS"),
    ("{server}/redirect?to=https://recordings.exotel.com/x.mp3", "resolves to 10.9.8.7, a private address"),
    ("{server}/huge", "is 5368709120 bytes (Content-Length)"),
])
def test_unsafe_recording_urls_end_failed_with_a_clear_reason(
    services: TranscriptionServices, recording_server: RecordingServer, make_voice_message: Callable[[], str],
    db: Db, url: str, reason: str,
) -> None:
    url = url.format(port=recording_server.server_address[1], server=recording_server.url)
    resolver = {"127.0.0.1": ["127.0.0.1"], "recordings.exotel.com": ["10.9.8.7"]}
    pinned = dataclasses.replace(services, resolve=lambda host, _port: resolver[host])
    message = make_voice_message()

    with pytest.raises(Reject) as caught:
        handle_transcription(job_for(message, url), pinned)

    assert reason in caught.value.reason
    found = row(db, message)
    assert found["transcription_status"] == "FAILED"
    assert reason in found["metadata"]["transcription"]["error"]
    assert recording_server.bytes_sent.get("huge", 0) < 64 * 1024 * 1024


def test_corrupt_audio_ends_failed_with_the_reason(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    make_voice_message: Callable[[], str], db: Db, tmp_path: Path,
) -> None:
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 400)
    url = recording_server.add_file("/exotelrecordings/ACCOUNT/corrupt.mp3", corrupt)
    message = make_voice_message()

    with pytest.raises(Reject, match=r"not decodable audio|no decodable audio"):
        handle_transcription(job_for(message, url), services)

    found = row(db, message)
    assert found["transcription_status"] == "FAILED"
    assert found["metadata"]["transcription"]["error"].startswith("audio_unreadable: ")
    assert openai_server.requests == []


def test_a_429_from_openai_delays_the_job_by_its_retry_after(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    make_voice_message: Callable[[], str], db: Db, queue_service: QueueServiceClient,
    unique_queue_name: Callable[..., str],
) -> None:
    queue = unique_queue_name(prefix="transcription")
    message = make_voice_message()
    job = job_for(message, recording_server.recording_url("c", duration_s=20))
    openai_server.fail_next(429, retry_after_s=45)

    with pytest.raises(TranscriptionRateLimited) as caught:
        handle_transcription(job, services)
    assert caught.value.retry_after_s == 45.0
    assert row(db, message)["transcription_status"] == "IN_PROGRESS"

    openai_server.fail_next(429, retry_after_s=45)
    result = run_job(kind="transcription", queue=queue, body=job.to_json(), message_id="m1",
                     handler=lambda j: handle_transcription(j, services),
                     queues=QueueOps(queue_service, encoding="base64"), policy=RetryPolicy(max_attempts=3))
    assert result.outcome is Outcome.RETRIED
    assert result.delay_s is not None
    assert result.delay_s >= 45
    client = queue_service.get_queue_client(queue)
    assert client.get_queue_properties().approximate_message_count == 1
    assert list(client.peek_messages(max_messages=1)) == []  # put back invisible: delayed, not lost

    handle_transcription(job.next_attempt(), services)  # the next attempt goes through
    assert row(db, message)["transcription_status"] == "COMPLETED"


def test_retry_later_on_the_last_attempt_ends_failed(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    make_voice_message: Callable[[], str], db: Db,
) -> None:
    message = make_voice_message()
    openai_server.fail_next(500)
    with pytest.raises(RetryLater):
        handle_transcription(job_for(message, recording_server.recording_url("c", duration_s=5), attempt=3),
                             services)
    found = row(db, message)
    assert found["transcription_status"] == "FAILED"
    assert "gave up after 3 attempts" in found["metadata"]["transcription"]["error"]


def test_two_deliveries_of_one_job_transcribe_once(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    make_voice_message: Callable[[], str], db: Db,
) -> None:
    message = make_voice_message()
    job = job_for(message, recording_server.recording_url("c", duration_s=240, fmt="mp3"))
    outcomes: list[str] = []

    def deliver() -> None:
        try:
            handle_transcription(job, services)
            outcomes.append("done")
        except RetryLater as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handle_transcription(job, services)  # a redelivery after completion: acknowledged without work

    assert sorted(outcomes) in (["done", "transcription_in_progress"], ["done", "done"])
    assert len(openai_server.requests) == 1
    assert row(db, message)["transcription_status"] == "COMPLETED"
    downloads = [r for r in recording_server.requests if r["path"].endswith("/c.mp3")]
    assert len(downloads) == 1


def test_concurrent_jobs_never_share_or_delete_each_others_files(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    make_voice_message: Callable[[], str], db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    corrupt = tmp_path / "bad.mp3"
    corrupt.write_bytes(b"\xff\xfb" + b"\x00garbage" * 5000)
    bad_url = recording_server.add_file("/exotelrecordings/ACCOUNT/bad.mp3", corrupt)
    good = {make_voice_message(): d for d in (45, 150)}  # with the corrupt one: 3 = TRANSCRIPTION_MAX_IN_FLIGHT
    bad = make_voice_message()
    work = [(m, recording_server.recording_url(f"r{d}", duration_s=d, fmt="mp3")) for m, d in good.items()]
    work.append((bad, bad_url))
    seen_dirs: set[str] = set()
    original = services.transcriber.transcribe

    def spying_transcribe(chunks: Any, **kwargs: Any) -> Any:
        seen_dirs.update(str(chunk.path.parent) for chunk in chunks)
        return original(chunks, **kwargs)

    monkeypatch.setattr(services.transcriber, "transcribe", spying_transcribe)
    errors: list[Exception] = []

    def run(message_id: str, url: str) -> None:
        try:
            handle_transcription(job_for(message_id, url), services)
        except Reject as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(errors) == 1  # the corrupt one; its clean-up removed nothing of the others
    assert row(db, bad)["transcription_status"] == "FAILED"
    for message_id, duration_s in good.items():
        found = row(db, message_id)
        assert found["transcription_status"] == "COMPLETED"
        assert found["metadata"]["transcription"]["duration"] == pytest.approx(duration_s, abs=0.5)
    assert len(seen_dirs) == 2  # one private directory per job
    assert list(services.temp_root.iterdir()) == []  # type: ignore[union-attr]


def test_a_message_already_completed_is_acknowledged_without_work(
    services: TranscriptionServices, recording_server: RecordingServer, make_voice_message: Callable[[], str],
    db: Db,
) -> None:
    message = make_voice_message()
    db.execute("UPDATE communication_messages SET transcription_status = 'COMPLETED', content = 'done'"
               " WHERE id = %s", [message])

    handle_transcription(job_for(message, recording_server.recording_url("c")), services)

    assert recording_server.requests == []
    assert row(db, message)["content"] == "done"


def test_when_every_global_slot_is_taken_the_job_waits_and_the_row_is_untouched(
    services: TranscriptionServices, recording_server: RecordingServer, redis_client: redis.Redis,
    make_voice_message: Callable[[], str], db: Db,
) -> None:
    others = Semaphore(redis_client, SLOTS_NAME, limit=3, lease_s=60)
    for _ in range(3):
        others.acquire()
    message = make_voice_message()

    with pytest.raises(SemaphoreFull) as caught:
        handle_transcription(job_for(message, recording_server.recording_url("c")), services)

    assert isinstance(caught.value, RetryLater)
    assert row(db, message)["transcription_status"] == "PENDING"
    assert recording_server.requests == []


@pytest.mark.parametrize("busy", ["global_slots", "same_message"])
def test_a_busy_deferral_keeps_the_attempt_and_never_exhausts_the_retries(
    *, services: TranscriptionServices, recording_server: RecordingServer, redis_client: redis.Redis,
    make_voice_message: Callable[[], str], db: Db, queue_service: QueueServiceClient,
    unique_queue_name: Callable[..., str], busy: str,
) -> None:
    message = make_voice_message()
    if busy == "global_slots":
        others = Semaphore(redis_client, SLOTS_NAME, limit=3, lease_s=60)
        for _ in range(3):
            others.acquire()
    else:  # another delivery of the same message is running
        Semaphore(redis_client, f"transcription-message:{message}", limit=1, lease_s=60).acquire()
    queue = unique_queue_name(prefix="transcription")
    job = job_for(message, recording_server.recording_url("c"), attempt=3)  # already the last attempt

    for _ in range(4):
        result = run_job(kind="transcription", queue=queue, body=job.to_json(), message_id="m1",
                         handler=lambda j: handle_transcription(j, services),
                         queues=QueueOps(queue_service, encoding="base64"), policy=RetryPolicy(max_attempts=3))
        assert result.outcome is Outcome.RETRIED
        assert result.error_code == ("semaphore_full" if busy == "global_slots" else "transcription_in_progress")

    client = queue_service.get_queue_client(queue)
    assert client.get_queue_properties().approximate_message_count == 4
    assert list(queue_service.list_queues(name_starts_with=f"{queue}-poison")) == []  # nothing dead-lettered
    assert row(db, message)["transcription_status"] == "PENDING"
    assert recording_server.requests == []


def _job_aged(job: Envelope[TranscriptionJob], age_s: float) -> Envelope[TranscriptionJob]:
    return job.model_copy(update={"created_at": datetime.now(UTC) - timedelta(seconds=age_s)})


def _short_lease_slots(services: TranscriptionServices, redis_client: redis.Redis) -> TranscriptionServices:
    """The global slots with a 0.3 s lease (renewed every 0.1 s), so a lost lease is noticed at once."""
    return dataclasses.replace(services, slots=Semaphore(redis_client, SLOTS_NAME, limit=3, lease_s=0.3))


def _lose_the_slot(redis_client: redis.Redis, slots: Semaphore) -> None:
    """What a Redis failover (or a stall longer than the lease) does: the lease is gone; wait for a renewal."""
    redis_client.delete(slots.key)
    time.sleep(slots.lease_s * 2)


def test_a_slot_lost_before_the_transcode_stops_the_job_with_a_deferral_and_frees_the_claim(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    redis_client: redis.Redis, make_voice_message: Callable[[], str], db: Db, monkeypatch: pytest.MonkeyPatch,
) -> None:
    short = _short_lease_slots(services, redis_client)
    message = make_voice_message()
    job = job_for(message, recording_server.recording_url("c", duration_s=5))
    original = handler_module.download_recording

    def download_then_lose_the_slot(*args: Any, **kwargs: Any) -> Any:
        recording = original(*args, **kwargs)
        _lose_the_slot(redis_client, short.slots)
        return recording

    monkeypatch.setattr(handler_module, "download_recording", download_then_lose_the_slot)
    with pytest.raises(RetryLater) as caught:
        handle_transcription(job, short)

    assert caught.value.counts_attempt is False
    assert caught.value.code == "transcription_slot_lost"
    assert openai_server.requests == []
    found = row(db, message)
    assert found["transcription_status"] == "IN_PROGRESS"
    assert "workerLease" not in found["metadata"]["transcription"]  # the claim is given back at once
    monkeypatch.setattr(handler_module, "download_recording", original)
    handle_transcription(job, short)  # the deferred copy goes through
    assert row(db, message)["transcription_status"] == "COMPLETED"


def test_a_slot_lost_between_chunk_uploads_stops_before_the_next_upload(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    redis_client: redis.Redis, make_voice_message: Callable[[], str], db: Db, monkeypatch: pytest.MonkeyPatch,
) -> None:
    short = dataclasses.replace(_short_lease_slots(services, redis_client), audio_limits=AudioLimits(max_chunk_s=10))
    message = make_voice_message()
    original = short.transcriber._create

    def upload_then_lose_the_slot(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        _lose_the_slot(redis_client, short.slots)
        return result

    monkeypatch.setattr(short.transcriber, "_create", upload_then_lose_the_slot)
    with pytest.raises(RetryLater) as caught:
        handle_transcription(job_for(message, recording_server.recording_url("c", duration_s=25, fmt="mp3")), short)

    assert caught.value.counts_attempt is False
    assert len(openai_server.requests) == 1  # three chunks; only the first was uploaded
    assert row(db, message)["transcription_status"] == "IN_PROGRESS"


def test_a_second_delivery_of_a_running_job_is_deferred_by_the_store_claim_when_redis_lost_the_mutex(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    redis_client: redis.Redis, make_voice_message: Callable[[], str], db: Db, monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = make_voice_message()
    job = job_for(message, recording_server.recording_url("c", duration_s=5))
    started, proceed = threading.Event(), threading.Event()
    original = handler_module.download_recording
    outcomes: list[str] = []

    def first_download_waits(*args: Any, **kwargs: Any) -> Any:
        if not started.is_set():
            started.set()
            assert proceed.wait(30)
        return original(*args, **kwargs)

    def first_delivery() -> None:
        handle_transcription(job, services)
        outcomes.append("done")

    monkeypatch.setattr(handler_module, "download_recording", first_download_waits)
    first = threading.Thread(target=first_delivery)
    first.start()
    try:
        assert started.wait(30)
        mutex = Semaphore(redis_client, f"transcription-message:{message}", limit=1)
        assert redis_client.delete(mutex.key) == 1  # Redis lost the per-message mutex
        with pytest.raises(RetryLater) as caught:
            handle_transcription(job, services)  # the same envelope, delivered again
    finally:
        proceed.set()
        first.join(30)

    assert caught.value.code == "transcription_in_progress"
    assert caught.value.counts_attempt is False
    assert outcomes == ["done"]
    assert len(openai_server.requests) == 1
    assert len([r for r in recording_server.requests if r["path"].endswith("/c.wav")]) == 1
    assert row(db, message)["transcription_status"] == "COMPLETED"


def test_an_openai_401_records_failed_without_the_key_and_still_propagates_to_the_host(
    services: TranscriptionServices, recording_server: RecordingServer, openai_server: OpenAIServer,
    make_voice_message: Callable[[], str], db: Db, queue_service: QueueServiceClient,
    unique_queue_name: Callable[..., str],
) -> None:
    message = make_voice_message()
    job = job_for(message, recording_server.recording_url("c", duration_s=5))
    openai_server.fail_next(401)

    with pytest.raises(ConfigurationError):  # the host retries it, then moves it to -poison
        run_job(kind="transcription", queue=unique_queue_name(prefix="transcription"), body=job.to_json(),
                message_id="m1", handler=lambda j: handle_transcription(j, services),
                queues=QueueOps(queue_service, encoding="base64"), policy=RetryPolicy(max_attempts=3))

    found = row(db, message)
    assert found["transcription_status"] == "FAILED"
    error = found["metadata"]["transcription"]["error"]
    assert error.startswith("configuration_error: ")
    assert "OPENAI_API_KEY" in error
    assert OPENAI_KEY not in error
    assert "workerLease" not in found["metadata"]["transcription"]
    handle_transcription(job, services)  # the host's redelivery claims the FAILED row again and completes
    assert row(db, message)["transcription_status"] == "COMPLETED"


def test_a_full_disk_records_failed_and_the_error_propagates(
    services: TranscriptionServices, recording_server: RecordingServer, make_voice_message: Callable[[], str],
    db: Db, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def disk_full(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(handler_module, "prepare_audio", disk_full)
    message = make_voice_message()
    with pytest.raises(OSError, match="No space left"):
        handle_transcription(job_for(message, recording_server.recording_url("c", duration_s=5)), services)

    found = row(db, message)
    assert found["transcription_status"] == "FAILED"
    assert found["metadata"]["transcription"]["error"] == "OSError: [Errno 28] No space left on device"


def test_a_deferral_past_the_age_limit_is_dead_lettered_and_recorded_failed(
    services: TranscriptionServices, recording_server: RecordingServer, redis_client: redis.Redis,
    make_voice_message: Callable[[], str], db: Db, queue_service: QueueServiceClient,
    unique_queue_name: Callable[..., str],
) -> None:
    others = Semaphore(redis_client, SLOTS_NAME, limit=3, lease_s=60)
    for _ in range(3):
        others.acquire()
    message = make_voice_message()
    job = _job_aged(job_for(message, recording_server.recording_url("c")), 25 * 3600)

    result = run_job(kind="transcription", queue=unique_queue_name(prefix="transcription"), body=job.to_json(),
                     message_id="m1", handler=lambda j: handle_transcription(j, services),
                     queues=QueueOps(queue_service, encoding="base64"), policy=RetryPolicy(max_attempts=3))

    assert result.outcome is Outcome.DEAD_LETTERED
    found = row(db, message)
    assert found["transcription_status"] == "FAILED"
    assert found["metadata"]["transcription"]["error"].startswith("semaphore_full: deferred for ")


def test_a_young_deferral_leaves_the_row_alone(
    services: TranscriptionServices, recording_server: RecordingServer, redis_client: redis.Redis,
    make_voice_message: Callable[[], str], db: Db,
) -> None:
    others = Semaphore(redis_client, SLOTS_NAME, limit=3, lease_s=60)
    for _ in range(3):
        others.acquire()
    message = make_voice_message()
    job = _job_aged(job_for(message, recording_server.recording_url("c")), 23 * 3600)

    with pytest.raises(SemaphoreFull):
        handle_transcription(job, services)
    assert row(db, message)["transcription_status"] == "PENDING"
