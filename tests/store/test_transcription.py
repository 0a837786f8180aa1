"""Contract: transcription state on VOICE rows, with metadata merged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from shared.store import TranscriptionOutcome
from shared.store.base import RpcStore


def test_completion_merges_metadata_and_keeps_the_call_summary(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message(channel="VOICE", direction="INBOUND", content="Call completed. Duration: 42s",
                           metadata={"recordingUrl": "https://r/x.mp3", "duration": 42})
    assert store.start_transcription(message, owner="a", lease_s=600).outcome is TranscriptionOutcome.STARTED
    assert store.start_transcription(message, owner="b", lease_s=600).outcome is TranscriptionOutcome.IN_PROGRESS
    outcome = store.complete_transcription(
        message, text="नमस्ते, rate for 2 containers", language="hi", confidence=0.876,
        details={"segments": [{"start": 0.0, "end": 2.5, "text": "नमस्ते"}], "duration": 42.0},
    )
    assert outcome is TranscriptionOutcome.COMPLETED
    row = db.execute("SELECT * FROM communication_messages WHERE id = %s", [message]).fetchone()
    assert row is not None
    assert row["content"] == "नमस्ते, rate for 2 containers"
    assert row["transcription_status"] == "COMPLETED"
    assert row["transcription_language"] == "hi"
    assert float(row["transcription_confidence"]) == 0.88
    metadata = row["metadata"]
    assert metadata["recordingUrl"] == "https://r/x.mp3"
    assert metadata["duration"] == 42
    assert metadata["call"] == {"summary": "Call completed. Duration: 42s"}
    assert metadata["transcription"]["segments"] == [{"start": 0.0, "end": 2.5, "text": "नमस्ते"}]
    assert "workerLease" not in metadata["transcription"]
    assert store.start_transcription(message, owner="c", lease_s=600).outcome is TranscriptionOutcome.ALREADY_COMPLETED


def test_failure_records_the_reason_without_touching_other_metadata(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message(channel="VOICE", direction="INBOUND", metadata={"call": {"from": "+91"}})
    store.start_transcription(message, owner="a", lease_s=600)
    assert store.fail_transcription(message, error="corrupt audio") is TranscriptionOutcome.FAILED
    row = db.execute("SELECT transcription_status, metadata, content FROM communication_messages WHERE id = %s",
                     [message]).fetchone()
    assert row is not None
    assert row["transcription_status"] == "FAILED"
    assert row["content"] == "hello"
    assert row["metadata"]["call"] == {"from": "+91"}
    assert row["metadata"]["transcription"]["error"] == "corrupt audio"
    assert store.start_transcription(message, owner="b", lease_s=600).outcome is TranscriptionOutcome.STARTED
    missing = store.start_transcription("00000000-0000-0000-0000-0000000000aa", owner="b", lease_s=1)
    assert missing.outcome is TranscriptionOutcome.MISSING


def test_release_gives_back_only_the_owners_lease_and_keeps_the_row_in_progress(
    store: RpcStore, make_message: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    message = make_message(channel="VOICE", direction="INBOUND", metadata={"call": {"from": "+91"}})
    assert store.start_transcription(message, owner="job-1:a", lease_s=600).outcome is TranscriptionOutcome.STARTED
    assert store.start_transcription(message, owner="job-1:b", lease_s=600).outcome is TranscriptionOutcome.IN_PROGRESS

    assert store.release_transcription(message, owner="job-1:b") is TranscriptionOutcome.IN_PROGRESS  # not its lease
    assert store.start_transcription(message, owner="job-1:c", lease_s=600).outcome is TranscriptionOutcome.IN_PROGRESS
    assert store.release_transcription(message, owner="job-1:a") is TranscriptionOutcome.RELEASED
    row = db.execute("SELECT transcription_status, metadata FROM communication_messages WHERE id = %s",
                     [message]).fetchone()
    assert row is not None
    assert row["transcription_status"] == "IN_PROGRESS"
    assert "workerLease" not in row["metadata"]["transcription"]
    assert row["metadata"]["call"] == {"from": "+91"}
    assert store.release_transcription(message, owner="job-1:a") is TranscriptionOutcome.RELEASED  # idempotent
    started = store.start_transcription(message, owner="job-1:c", lease_s=600)
    assert started.outcome is TranscriptionOutcome.STARTED
    assert started.attempts == 2
    store.complete_transcription(message, text="t", language=None, confidence=None, details={})
    assert store.release_transcription(message, owner="job-1:c") is TranscriptionOutcome.ALREADY_COMPLETED
    missing = "00000000-0000-0000-0000-0000000000aa"
    assert store.release_transcription(missing, owner="x") is TranscriptionOutcome.MISSING
