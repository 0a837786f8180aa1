"""scripts/checkov.sh: the report and checkov's captured stderr are temporary files, removed on every exit.

A stand-in ``checkov`` (in a fake venv given by ``CHECKOV_VENV``) writes the report, so the test runs the
real script in seconds; the real scan runs in scripts/test.sh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.bicep import REPO

SCRIPT = REPO / "scripts" / "checkov.sh"
VERSION = next(
    line.split('"')[1]
    for line in SCRIPT.read_text(encoding="utf-8").splitlines()
    if line.startswith("CHECKOV_VERSION=")
)


def _fake_venv(root: Path, report: str) -> Path:
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (root / "report.json").write_text(report, encoding="utf-8")
    checkov = bin_dir / "checkov"
    checkov.write_text(
        "#!/usr/bin/env bash\n"
        f'if [[ "${{1:-}}" == --version ]]; then echo {VERSION}; exit 0; fi\n'
        "echo 'some warning' >&2\n"
        f"cat '{root / 'report.json'}'\n",
        encoding="utf-8",
    )
    checkov.chmod(0o755)
    return root / "venv"


@pytest.mark.parametrize(
    ("report", "exit_code"),
    [
        (json.dumps({"check_type": "bicep", "summary": {"passed": 3}, "results": {"failed_checks": []}}), 0),
        ("", 1),  # no report: the script prints checkov's stderr from the temporary file and fails
    ],
    ids=["report", "no-report"],
)
def test_checkov_script_leaves_no_temporary_files(tmp_path: Path, report: str, exit_code: int) -> None:
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    venv = _fake_venv(tmp_path, report)

    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "CHECKOV_VENV": str(venv), "TMPDIR": str(temp_dir)},
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == exit_code, result.stderr
    if exit_code:
        assert "some warning" in result.stderr
    assert list(temp_dir.iterdir()) == []
