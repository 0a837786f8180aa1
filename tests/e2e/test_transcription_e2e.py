"""Transcription end to end: the original BullMQ payload on the queue → recording stand-in → OpenAI stand-in →
the VOICE row COMPLETED with the transcript, keeping the call webhook's metadata."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import psycopg

from devhost.standins.openai import OpenAIServer
from devhost.standins.recordings import RecordingServer
from tests.e2e.conftest import AppHost, Db, wait_for
from tests.support.transcription import OPENAI_KEY, RECORDING_PASSWORD, RECORDING_USER


def make_voice_message(db: Db, recording_url: str) -> tuple[str, str]:
    """A VOICE row as Exotel's call webhook writes it; returns (message_id, thread_id)."""
    thread = db.execute("INSERT INTO communication_threads (reference, type, primary_channel) VALUES"
                        " ('BX-E2E-' || gen_random_uuid(), 'QUERY', 'VOICE') RETURNING id").fetchone()
    assert thread is not None
    row = db.execute(
        "INSERT INTO communication_messages (thread_id, channel, direction, status, content, external_id, metadata,"
        " transcription_status) VALUES (%s, 'VOICE', 'INBOUND', 'PENDING', 'Call completed. Duration: 15s', %s, %s,"
        " 'PENDING') RETURNING id",
        [thread["id"], f"CA{uuid.uuid4().hex}",
         psycopg.types.json.Jsonb({"recordingUrl": recording_url, "duration": 15, "direction": "inbound"})],
    ).fetchone()
    assert row is not None
    return str(row["id"]), str(thread["id"])


def transcription_settings(openai_server: OpenAIServer) -> dict[str, str]:
    """Settings pointing the worker at the two stand-ins."""
    return {
        "EXOTEL_API_KEY": RECORDING_USER, "EXOTEL_TOKEN": RECORDING_PASSWORD,
        "RECORDING_ALLOW_HTTP_HOSTS": "127.0.0.1",
        "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_server.base_url, "OPENAI_TIMEOUT_S": "60",
    }


def _row(db: Db, message_id: str) -> dict:
    row = db.execute("SELECT * FROM communication_messages WHERE id = %s", [message_id]).fetchone()
    assert row is not None
    return row


def test_original_payload_is_transcribed_into_the_voice_row(
    app_host: Callable[..., AppHost], recording_server: RecordingServer, openai_server: OpenAIServer, db: Db,
) -> None:
    url = recording_server.recording_url("e2e-call", duration_s=15)
    message_id, thread_id = make_voice_message(db, url)
    host = app_host(["transcribe_recording"], **transcription_settings(openai_server))

    host.enqueue("TRANSCRIPTION_QUEUE_NAME", json.dumps(
        {"messageId": message_id, "threadId": thread_id, "audioUrl": url, "callSid": "CA-e2e"}))

    row = wait_for("the transcription", lambda: (r := _row(db, message_id))["transcription_status"] in (
        "COMPLETED", "FAILED") and r)
    assert row["transcription_status"] == "COMPLETED", row["metadata"].get("transcription")
    assert row["content"] == "Audio from 0 to 10 seconds. Audio from 10 to 15 seconds."
    assert row["transcription_language"] == "en"  # Whisper says "english"; stored as the ISO code
    details = row["metadata"]["transcription"]
    assert details["duration"] == 15
    assert [s["start"] for s in details["segments"]] == [0, 10]
    assert "completedAt" in details
    assert "workerLease" not in details
    # The call webhook's facts are kept; its summary moved to metadata.call.summary.
    assert row["metadata"]["recordingUrl"] == url
    assert row["metadata"]["call"]["summary"] == "Call completed. Duration: 15s"
    assert [r["authorised"] for r in recording_server.requests] == [True]
    assert len(openai_server.requests) == 1
    assert host.queue_depth(host.queue("TRANSCRIPTION_QUEUE_NAME") + "-poison") == 0
