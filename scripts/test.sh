#!/usr/bin/env bash
# The test command (README, CI): venv + dev requirements, local services, ruff, pytest.
#
#   scripts/test.sh                  the whole suite
#   scripts/test.sh tests/x.py -k y  extra arguments go to pytest
#   KEEP_SERVICES=1 scripts/test.sh  leave the services running afterwards (faster reruns)
#
# Services this run started are stopped on exit, unless another run sharing them is still going: each
# scripts/test.sh and scripts/run-local.sh run holds a lease ($SVC_DIR/leases/<pid>) and the last run out
# stops services a script started ($SVC_DIR/started-by-test-sh). Services that were already running are
# left alone.
# pytest's "no tests collected" (exit code 5) counts as a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
SERVICES=scripts/services.sh
SVC_DIR="${SVC_DIR:-/tmp/banxway-services}"
export SVC_DIR
LEASES="$SVC_DIR/leases"
AUTO_MARK="$SVC_DIR/started-by-test-sh"

say() { printf 'test.sh: %s\n' "$*" >&2; }

# --- Python environment --------------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    say "creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
# Reinstall only when the requirement files changed since the last successful install.
req_hash="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [[ "$(cat .venv/.requirements-installed 2>/dev/null || true)" != "$req_hash" ]]; then
    say "installing requirements-dev.txt"
    # This machine's pip config names local wheel folders that may not exist; their warnings are noise.
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt \
        2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
    printf '%s\n' "$req_hash" >.venv/.requirements-installed
fi

# --- services ------------------------------------------------------------------------------------
# The lease comes first: a run-local.sh or test.sh run ending meanwhile then never stops the services.
mkdir -p "$LEASES"
: >"$LEASES/$$"
started_here=0
if ! bash "$SERVICES" status >/dev/null 2>&1; then
    started_here=1
fi

stop_services() {
    local rc=$?
    rm -f "$LEASES/$$"
    if [[ "${KEEP_SERVICES:-0}" == 1 ]]; then
        say "KEEP_SERVICES=1: services left running (stop them with: $SERVICES down)"
        return "$rc"
    fi
    local lease others=0
    # Any live lease counts, scripts/run-local.sh's too: the marker never stops services one of them uses.
    for lease in "$LEASES"/*; do
        [[ -e "$lease" ]] || continue
        if kill -0 "${lease##*/}" 2>/dev/null; then others=1; else rm -f "$lease"; fi
    done
    if ((others)); then
        say "another run (scripts/test.sh or scripts/run-local.sh) still uses the services; leaving them running"
    elif ((started_here)) || [[ -e "$AUTO_MARK" ]]; then
        bash "$SERVICES" down || say "WARNING: $SERVICES down failed"
    else
        say "services were already running before this run; leaving them running"
    fi
    return "$rc"
}
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$SERVICES" up
mkdir -p "$LEASES"
: >"$LEASES/$$"   # again: a `services.sh down` racing with the status check removes $SVC_DIR with the lease
if ((started_here)); then : >"$AUTO_MARK"; fi
# shellcheck disable=SC1090
. "$(bash "$SERVICES" env)"

# --- checks --------------------------------------------------------------------------------------
failed=0
say "ruff check ."
.venv/bin/ruff check . || failed=1
say "mypy (strict on shared/ and functions/)"
.venv/bin/mypy || failed=1
if (($# == 0)); then
    # Infrastructure policy scan, offline, in its own venv (checkov pins an older pycep-parser).
    say "checkov on infra/"
    bash scripts/checkov.sh || failed=1
fi

say "pytest $*"
set +e
.venv/bin/python -m pytest "$@"
pytest_rc=$?
set -e
if ((pytest_rc == 5)); then
    say "FAILED: pytest collected no tests (exit code 5)"
    failed=1
elif ((pytest_rc != 0)); then
    failed=1
fi

if ((failed)); then
    say "FAILED (ruff and/or pytest, see above)"
    exit 1
fi
say "all checks passed"
