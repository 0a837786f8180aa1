"""The session-wide secret scan (tests.support.secret_scan) fails a run that leaks, and only such a run.

Each test runs a small pytest session in a subprocess with only that plugin, and reads its exit code and
report: the report names the logger and the setting, never the value.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.host import REPO_ROOT
from tests.support.secret_scan import AZURITE_ACCOUNT_KEY, secret_candidates

LEAKED = "leaky-token-6f2b9c1e"


def _run_session(tmp_path: Path, test_source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n", encoding="utf-8")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(test_source), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.support.secret_scan", "-c", str(tmp_path / "pytest.ini"),
         str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, check=False,
    )


def test_a_secret_logged_by_any_logger_fails_the_session_and_the_report_names_logger_and_setting(tmp_path):
    result = _run_session(tmp_path, f"""
        import logging
        from shared.settings import Settings

        def test_passes_but_leaks():
            settings = Settings.from_env({{"EXOTEL_TOKEN": "{LEAKED}"}})
            logging.getLogger("inner.leaky").debug("calling with %s", settings.exotel_token.get_secret_value())
    """)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 passed" in output
    assert "EXOTEL_TOKEN in logger inner.leaky" in output
    assert "test_inner.py::test_passes_but_leaks" in output
    assert LEAKED not in output


def test_a_record_logged_before_its_settings_were_built_is_still_caught(tmp_path):
    result = _run_session(tmp_path, f"""
        import logging
        from shared.settings import Settings

        def test_logs_first():
            logging.getLogger("inner.early").warning("key=%s", "{LEAKED}")

        def test_builds_later():
            Settings.from_env({{"OPENAI_API_KEY": "{LEAKED}"}})
    """)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "OPENAI_API_KEY in logger inner.early" in output
    assert LEAKED not in output


def test_captured_stdout_and_a_url_password_are_scanned(tmp_path):
    result = _run_session(tmp_path, """
        from shared.settings import Settings

        def test_prints_the_password():
            Settings.from_env({"REDIS_URL": "redis://:pw-9d8c7b6a5f@127.0.0.1:6390/0"})
            print("connected with pw-9d8c7b6a5f")
    """)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "REDIS_URL (part) in captured stdout call" in output
    assert "pw-9d8c7b6a5f" not in output


def test_the_log_of_a_subprocess_host_is_scanned_with_the_secrets_of_its_environment(tmp_path):
    result = _run_session(tmp_path, f"""
        import os, subprocess, sys, time
        from tests.support.host import HostProcess

        def test_host_leaks(tmp_path):
            log_path = tmp_path / "devhost.log"
            code = ("import os, time; print('[t] INFO devhost.worker: key', os.environ['EXOTEL_API_KEY'], flush=True);"
                    " time.sleep(60)")
            with log_path.open("wb") as log:
                process = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                           env={{**os.environ, "EXOTEL_API_KEY": "{LEAKED}"}})
            host = HostProcess(process, "http://127.0.0.1:1", log_path)
            deadline = time.monotonic() + 20
            while "devhost.worker" not in host.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            host.stop()
    """)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "EXOTEL_API_KEY in logger devhost.worker in subprocess host" in output
    assert LEAKED not in output


def test_public_development_values_and_short_values_are_not_flagged(tmp_path):
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_ACCOUNT_KEY};QueueEndpoint=http://127.0.0.1:10101/devstoreaccount1;"
    )
    result = _run_session(tmp_path, f"""
        import logging
        from shared.settings import Settings

        def test_logs_public_values():
            settings = Settings.from_env({{
                "AzureWebJobsStorage": "{connection}", "EXOTEL_TOKEN": "secret",
                "REDIS_URL": "redis://127.0.0.1:6390/0", "DATABASE_URL": "postgresql://postgres@127.0.0.1:5440/app",
            }})
            log = logging.getLogger("inner.public")
            log.warning("storage %s", settings.storage_connection_string.get_secret_value())
            log.warning("the word secret, redis://127.0.0.1:6390/0, postgresql://postgres@127.0.0.1:5440/app")
    """)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "secret scan" not in output


def test_a_real_account_key_is_scanned_whole_and_on_its_own():
    value = "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=cHJvZC1rZXktbm90LXB1YmxpYw==;"
    assert secret_candidates("AzureWebJobsStorage", value) == [
        ("AzureWebJobsStorage", value), ("AzureWebJobsStorage (part)", "cHJvZC1rZXktbm90LXB1YmxpYw=="),
    ]
