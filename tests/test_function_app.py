"""What the host indexes: importing function_app is free of side effects; binding metadata is as intended."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import function_app

REPO = Path(__file__).resolve().parent.parent

# Every function the host will index, with the raw bindings the Python worker sends it. Queue names and
# schedules are %SETTING% expressions the host resolves from app settings.
EXPECTED_BINDINGS = {
    "health": [
        {"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["GET"], "authLevel": "ANONYMOUS",
         "route": "health"},
        {"direction": "OUT", "type": "http", "name": "$return"},
    ],
    "health_ready": [
        {"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["GET"], "authLevel": "FUNCTION",
         "route": "health/ready"},
        {"direction": "OUT", "type": "http", "name": "$return"},
    ],
    "metrics": [
        {"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["GET"], "authLevel": "FUNCTION",
         "route": "metrics"},
        {"direction": "OUT", "type": "http", "name": "$return"},
    ],
    "whatsapp_send": [
        {"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "%WHATSAPP_QUEUE_NAME%",
         "connection": "AzureWebJobsStorage"},
    ],
    "transcribe_recording": [
        {"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "%TRANSCRIPTION_QUEUE_NAME%",
         "connection": "AzureWebJobsStorage"},
    ],
    "whatsapp_send_priority": [
        {"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "%WHATSAPP_PRIORITY_QUEUE_NAME%",
         "connection": "AzureWebJobsStorage"},
    ],
    "whatsapp_status_callback": [
        {"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["POST"], "authLevel": "ANONYMOUS",
         "route": "whatsapp/status/{secret}"},
        {"direction": "OUT", "type": "http", "name": "$return"},
    ],
    "email_schedule_polls": [
        {"direction": "IN", "type": "timerTrigger", "name": "timer", "schedule": "%EMAIL_POLL_SCHEDULE%",
         "runOnStartup": False, "useMonitor": False},
    ],
    "email_poll_inbox": [
        {"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "%EMAIL_QUEUE_NAME%",
         "connection": "AzureWebJobsStorage"},
    ],
}


def _indexed_functions():
    # FunctionApp.get_functions() is one-shot (it records names to reject duplicates); the host calls it once
    # per process, tests call it per test, so forget the record first.
    function_app.app.functions_bindings = {}
    return function_app.app.get_functions()


def test_every_function_has_the_expected_binding_metadata():
    indexed = {f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()] for f in _indexed_functions()}
    assert indexed == EXPECTED_BINDINGS


def test_queue_names_and_schedules_are_setting_expressions():
    for function in _indexed_functions():
        for binding in (json.loads(b) for b in function.get_raw_bindings()):
            if binding["type"] == "queueTrigger":
                assert binding["queueName"].startswith("%")
                assert binding["queueName"].endswith("%")
                assert binding["connection"] == "AzureWebJobsStorage"
            if binding["type"] == "timerTrigger":
                assert binding["schedule"].startswith("%")


PROBE = textwrap.dedent(
    """
    import json, os, socket, sys

    read = []
    connects = []

    class RecordingEnviron(dict):
        def __getitem__(self, key):
            read.append(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            read.append(key)
            return super().get(key, default)

        def __contains__(self, key):
            read.append(key)
            return super().__contains__(key)

    os.environ = RecordingEnviron(os.environ)
    real_connect = socket.socket.connect

    def record_connect(self, address):
        connects.append(str(address))
        raise OSError("no connections at import time")

    socket.socket.connect = record_connect
    socket.create_connection = lambda *a, **k: record_connect(None, a[0] if a else None)

    import function_app  # noqa: F401
    from shared.settings import Settings, get_settings
    from shared.deps import get_deps

    names = {f.alias for f in Settings.model_fields.values()}
    print(json.dumps({
        "settings_read": sorted(set(read) & names),
        "connects": connects,
        "settings_built": get_settings.cache_info().currsize,
        "deps_built": get_deps.cache_info().currsize,
    }))
    """
)


def test_importing_function_app_reads_no_setting_and_opens_no_connection():
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0",
           "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "EXOTEL_TOKEN": "x"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"settings_read": [], "connects": [], "settings_built": 0, "deps_built": 0}
