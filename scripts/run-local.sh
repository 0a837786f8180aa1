#!/usr/bin/env bash
# Run the workers locally on a fresh machine: venv + requirements, local services (Azurite, Redis,
# PostgreSQL, Dovecot), schema and demo data, local.settings.json, then `func start` if Core Tools are
# installed, otherwise the local host (`python -m devhost`). Ctrl-C stops everything it started.
#
#   scripts/run-local.sh                 all functions on http://127.0.0.1:7071
#   FUNCTIONS=health,poll_inboxes scripts/run-local.sh   only these functions (local host only)
#   PORT=7072 KEEP_SERVICES=1 scripts/run-local.sh       another port; leave the services running on exit
#   USE_DEVHOST=1 scripts/run-local.sh   use the local host even when `func` is installed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${PORT:-7071}"
RUN_DIR="${RUN_DIR:-$ROOT/.services/run-local}"
HOST_LOG="$RUN_DIR/host.log"
PY="$ROOT/.venv/bin/python"
HOST_PID=""
TAIL_PID=""
SERVICES_STARTED=0

say() { printf 'run-local: %s\n' "$*" >&2; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$HOST_PID" ]] && kill -0 "$HOST_PID" 2>/dev/null; then
        say "stopping the functions host (pid $HOST_PID)"
        kill -INT "$HOST_PID" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$HOST_PID" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$HOST_PID" 2>/dev/null && { say "host did not stop in 30 s; killing it"; kill -KILL "$HOST_PID" 2>/dev/null || true; }
        wait "$HOST_PID" 2>/dev/null || true
    fi
    if [[ -n "$TAIL_PID" ]]; then kill "$TAIL_PID" 2>/dev/null || true; wait "$TAIL_PID" 2>/dev/null || true; fi
    if [[ "$SERVICES_STARTED" == 1 && "${KEEP_SERVICES:-0}" != 1 ]]; then
        say "stopping local services (KEEP_SERVICES=1 keeps them)"
        scripts/services.sh down || true
    fi
    say "stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Python environment ------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
    say "creating .venv"
    python3 -m venv .venv
fi
REQ_HASH="$(sha256sum < requirements.txt | cut -c1-16)"
if [[ "$(cat .venv/.requirements-hash 2>/dev/null || true)" != "$REQ_HASH" ]]; then
    say "installing requirements.txt"
    "$PY" -m pip install -q -r requirements.txt
    echo "$REQ_HASH" > .venv/.requirements-hash
fi

# 2. Local services ----------------------------------------------------------------------------
say "starting local services (scripts/services.sh up)"
SERVICES_STARTED=1
scripts/services.sh up
# shellcheck disable=SC1090
. "$(scripts/services.sh env)"
mkdir -p "$RUN_DIR"

# 3. Schema ------------------------------------------------------------------------------------
if [[ -f shared/store/migrate.py ]]; then
    say "applying the database schema (baseline + migrations)"
    "$PY" -m shared.store.migrate --baseline
else
    say "SKIPPED schema: shared/store/migrate.py is not there yet (store issue)"
fi

# 4. Demo data: an email account on the local Dovecot (IMAPS, services CA) and a few emails -----
if [[ -f scripts/seed_demo.py ]]; then
    say "seeding the demo email account and emails"
    "$PY" scripts/seed_demo.py
else
    say "SKIPPED demo data: scripts/seed_demo.py is not there yet (needs the store)"
fi

# 5. local.settings.json -----------------------------------------------------------------------
if [[ ! -f local.settings.json ]]; then
    say "writing local.settings.json (from local.settings.json.example and the services' env)"
    "$PY" - <<'PYEOF'
import json, os, secrets
from pathlib import Path
example = Path("local.settings.json.example")
doc = json.loads(example.read_text()) if example.exists() else {"IsEncrypted": False, "Values": {}}
values = doc.setdefault("Values", {})
values.setdefault("FUNCTIONS_WORKER_RUNTIME", "python")
for name in ("AzureWebJobsStorage", "REDIS_URL", "DATABASE_URL", "IMAP_CA_FILE"):
    if os.environ.get(name):
        values[name] = os.environ[name]
# Keys for the local host's FUNCTION/ADMIN routes (func start does not check keys locally).
for name in ("DEVHOST_FUNCTION_KEY", "DEVHOST_MASTER_KEY"):
    if not values.get(name):
        values[name] = secrets.token_urlsafe(24)
Path("local.settings.json").write_text(json.dumps(doc, indent=2) + "\n")
os.chmod("local.settings.json", 0o600)
PYEOF
fi

# 6. Stand-ins for Exotel and OpenAI (only when no real credentials are configured) -------------
# TODO(lead): start devhost/standins/{exotel,openai}.py here once they have a CLI entry point, and point
# EXOTEL_API_URL / OPENAI_BASE_URL at them when EXOTEL_API_KEY / OPENAI_API_KEY are not set.
for standin in exotel openai; do
    if [[ -f "devhost/standins/$standin.py" ]]; then
        say "SKIPPED $standin stand-in: devhost/standins/$standin.py exists but is not wired into this script yet"
    else
        say "SKIPPED $standin stand-in: not built yet (a later issue); its functions need real credentials"
    fi
done

# 7. Functions host ------------------------------------------------------------------------------
: > "$HOST_LOG"
if command -v func >/dev/null 2>&1 && [[ "${USE_DEVHOST:-0}" != 1 ]]; then
    say "starting: func start --port $PORT (Core Tools)"
    func start --port "$PORT" >>"$HOST_LOG" 2>&1 &
    HOST_PID=$!
else
    args=(--port "$PORT")
    [[ -n "${FUNCTIONS:-}" ]] && args+=(--functions "$FUNCTIONS")
    say "starting: python -m devhost ${args[*]} (Core Tools not found)"
    "$PY" -m devhost "${args[@]}" >>"$HOST_LOG" 2>&1 &
    HOST_PID=$!
fi
tail -n +1 -F "$HOST_LOG" 2>/dev/null &
TAIL_PID=$!

ready=0
for _ in $(seq 1 150); do
    kill -0 "$HOST_PID" 2>/dev/null || { say "the host exited; see $HOST_LOG"; exit 1; }
    if "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "http://127.0.0.1:$PORT/api/health" 2>/dev/null; then ready=1; break; fi
    sleep 0.2
done
[[ "$ready" == 1 ]] || { say "the host did not answer on port $PORT within 30 s; see $HOST_LOG"; exit 1; }

cat >&2 <<INFO

run-local: ready
  health          http://127.0.0.1:$PORT/api/health
  function keys   DEVHOST_FUNCTION_KEY / DEVHOST_MASTER_KEY in local.settings.json (x-functions-key header or ?code=)
  host log        $HOST_LOG
  services env    $(scripts/services.sh env)   (source it to use the same Azurite/Redis/PostgreSQL/Dovecot)
  services        Azurite blob ${AZ_BLOB_PORT:-10100} queue ${AZ_QUEUE_PORT:-10101} table ${AZ_TABLE_PORT:-10102}; Redis ${REDIS_PORT:-6390}; PostgreSQL ${PG_PORT:-5440}; IMAP ${IMAP_PORT:-10143} / IMAPS ${IMAPS_PORT:-10993}
  Ctrl-C stops the host and the services (KEEP_SERVICES=1 keeps the services)

INFO
wait "$HOST_PID" || true
HOST_PID=""
say "the host exited; see $HOST_LOG"
