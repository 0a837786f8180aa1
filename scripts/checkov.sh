#!/usr/bin/env bash
# Static checks of infra/ with checkov, offline (--skip-download: no Bridgecrew/Prisma platform calls, no
# external registry modules). checkov lives in its own venv because it pins an older pycep-parser than
# the project's tests use. Fails on a parsing error or any failed check; skipped checks carry their
# reason in the Bicep file (#checkov:skip=CKV_...:reason).
#
# Usage: scripts/checkov.sh            (creates .venv-checkov on first run)
#        CHECKOV_VENV=/path scripts/checkov.sh
set -euo pipefail

CHECKOV_VERSION="3.3.30"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CHECKOV_VENV:-$root/.venv-checkov}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/checkov" ]] || [[ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]]; then
    echo "checkov.sh: installing checkov==$CHECKOV_VERSION into $venv" >&2
    "$python" -m venv "$venv"
    # Like Python 3.13's venv: keep git and ruff (which honours .gitignore) out of this tree.
    echo '*' >"$venv/.gitignore"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" \
        >"$venv/pip-install.log" 2>&1; then
        cat "$venv/pip-install.log" >&2
        exit 1
    fi
fi

report="$(mktemp)"
# checkov's stderr goes to "$report.stderr" (shown when it writes no report); remove both on any exit.
trap 'rm -f "$report" "$report.stderr"' EXIT

cd "$root"
# Exit code is ignored here: the JSON report is judged below, so parse errors cannot pass silently.
BC_SKIP_MAPPING=TRUE "$venv/bin/checkov" -d infra --framework bicep --skip-download --quiet -o json \
    >"$report" 2>"$report.stderr" || true

"$venv/bin/python" - "$report" "$report.stderr" <<'PY'
import json
import sys

report_path, stderr_path = sys.argv[1], sys.argv[2]
raw = open(report_path, encoding="utf-8").read().strip()
if not raw:
    sys.stderr.write(open(stderr_path, encoding="utf-8").read())
    sys.exit("checkov.sh: checkov produced no report")
data = json.loads(raw)
reports = data if isinstance(data, list) else [data]
if not any(r.get("check_type") == "bicep" for r in reports if isinstance(r, dict)):
    sys.exit(f"checkov.sh: no bicep report in checkov output: {raw[:500]}")
failed_total = 0
for report in reports:
    summary = report.get("summary", {})
    results = report.get("results", {})
    parse_errors = summary.get("parsing_errors", 0)
    failed = results.get("failed_checks", [])
    print(
        f"checkov {report.get('check_type')}: passed={summary.get('passed', 0)} "
        f"failed={summary.get('failed', 0)} skipped={summary.get('skipped', 0)} parsing_errors={parse_errors}"
    )
    for path in results.get("parsing_errors", []) or []:
        print(f"  PARSE ERROR {path}")
    for check in failed:
        print(f"  FAILED {check['check_id']} {check.get('check_name', '')} "
              f"{check.get('file_path', '')}:{check.get('resource', '')}")
    failed_total += len(failed) + parse_errors
sys.exit(1 if failed_total else 0)
PY
