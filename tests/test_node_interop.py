"""The main API (Node, @azure/storage-queue) and the workers agree on the queue encoding, both ways.

tools/node-client pins the Node client; its queue.mjs enqueues a job exactly as the main API is told to
(README "Jobs and queues"): JSON, UTF-8, base64 — what host.json's messageEncoding makes the host decode.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.jobs import parse_job
from shared.queues import QueueOps

CLIENT = Path(__file__).resolve().parent.parent / "tools" / "node-client"
JOB = {"action": "SEND_MESSAGE", "data": {"threadId": "4f5e6d7c-8b9a-4c0d-9e1f-2a3b4c5d6e7f", "to": "+919876543210",
       "text": "Container MSCU 123 — दस्तावेज़ ready ✓", "messageId": "0b7c3a52-5d0e-4b8e-9d43-6c1f3f0a9e01"}}


@pytest.fixture(scope="module")
def node_client(storage_connection_string):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the Node interoperability test needs Node 20 (Debian's nodejs)")
    if not (CLIENT / "node_modules" / "@azure" / "storage-queue").exists():
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=CLIENT, check=True, timeout=300)

    def run(*args: str) -> str:
        env = dict(os.environ, AzureWebJobsStorage=storage_connection_string)
        done = subprocess.run([node, "queue.mjs", *args], cwd=CLIENT, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def test_a_job_enqueued_by_the_node_api_decodes_as_the_workers_expect(node_client, queue_service,
                                                                       unique_queue_name):
    queue = unique_queue_name()
    node_client("send", queue, json.dumps(JOB, ensure_ascii=False))
    ops = QueueOps(queue_service, encoding="base64")
    (message,) = list(ops.client(queue).receive_messages(max_messages=1))
    job = parse_job("whatsapp", message.content, message_id=message.id)
    assert job.payload.data.text == JOB["data"]["text"]


def test_a_job_enqueued_by_the_workers_decodes_in_node(node_client, queue_service, unique_queue_name):
    queue = unique_queue_name()
    envelope = QueueOps(queue_service, encoding="base64").enqueue(queue, "whatsapp", JOB)
    received = json.loads(node_client("receive", queue))
    assert received["id"] == envelope.id
    assert received["payload"]["data"]["text"] == JOB["data"]["text"]
