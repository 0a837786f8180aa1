#!/usr/bin/env bash
# Run the workers locally on a fresh machine: venv + requirements, local services (Azurite, Redis,
# PostgreSQL, Dovecot), schema, local.settings.json, stand-ins for Exotel (+ its recording server) and
# OpenAI when no real credentials are configured, demo data, then `func start` if Core Tools are
# installed, otherwise the local host (`python -m devhost`). Ctrl-C stops everything it started.
#
#   scripts/run-local.sh                 all functions on http://127.0.0.1:7071
#   FUNCTIONS=health,whatsapp_send scripts/run-local.sh   only these functions (local host only)
#   PORT=7072 KEEP_SERVICES=1 scripts/run-local.sh       another port; leave the services running on exit
#
# Like scripts/test.sh, each run holds a lease ($SVC_DIR/leases/<pid>) while it uses the services. On exit
# it stops the services only if it started them and no other live run (test.sh or run-local.sh) holds a
# lease; if one does, it leaves them running and marks them ($SVC_DIR/started-by-test-sh) so that the last
# run out (test.sh or run-local.sh) stops them. Services already running before any script are never stopped.
#   USE_DEVHOST=1 scripts/run-local.sh   use the local host even when `func` is installed
#   EXOTEL_STANDIN_PORT=18088 RECORDINGS_STANDIN_PORT=18090 OPENAI_STANDIN_PORT=18080   the stand-ins' ports
#   SVC_DIR, AZ_*_PORT, REDIS_PORT, PG_PORT, IMAP_PORT, IMAPS_PORT   the services' (see scripts/services.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${PORT:-7071}"
RUN_DIR="${RUN_DIR:-$ROOT/.services/run-local}"
HOST_LOG="$RUN_DIR/host.log"
PY="$ROOT/.venv/bin/python"
EXOTEL_STANDIN_PORT="${EXOTEL_STANDIN_PORT:-18088}"
RECORDINGS_STANDIN_PORT="${RECORDINGS_STANDIN_PORT:-18090}"
OPENAI_STANDIN_PORT="${OPENAI_STANDIN_PORT:-18080}"
SVC_DIR="${SVC_DIR:-/tmp/banxway-services}"
SVC_DIR="${SVC_DIR%/}"
export SVC_DIR
LEASES="$SVC_DIR/leases"
AUTO_MARK="$SVC_DIR/started-by-test-sh"   # "started by a script; the last run out stops them"
HOST_PID=""
TAIL_PID=""
SERVICES_STARTED=0
STANDIN_PIDS=()
STANDIN_LOGS=()
STANDIN_INFO=()

say() { printf 'run-local: %s\n' "$*" >&2; }

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    if [[ -n "$HOST_PID" ]] && kill -0 "$HOST_PID" 2>/dev/null; then
        say "stopping the functions host (pid $HOST_PID)"
        kill -INT "$HOST_PID" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$HOST_PID" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$HOST_PID" 2>/dev/null && { say "host did not stop in 30 s; killing it"; kill -KILL "$HOST_PID" 2>/dev/null || true; }
        wait "$HOST_PID" 2>/dev/null || true
    fi
    # The stand-ins outlive the host so that work it finishes while stopping can still reach them.
    for pid in "${STANDIN_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STANDIN_PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ((${#STANDIN_PIDS[@]})) && say "stopped the stand-ins"
    if [[ -n "$TAIL_PID" ]]; then kill "$TAIL_PID" 2>/dev/null || true; wait "$TAIL_PID" 2>/dev/null || true; fi
    rm -f "$LEASES/$$"
    if [[ ( "$SERVICES_STARTED" == 1 || -e "$AUTO_MARK" ) && "${KEEP_SERVICES:-0}" != 1 ]]; then
        if other_leases; then
            say "another run (scripts/test.sh or scripts/run-local.sh) still uses the services; leaving them running"
            : >"$AUTO_MARK" 2>/dev/null || true   # the last run out (test.sh or run-local.sh) stops them
        else
            say "stopping local services (KEEP_SERVICES=1 keeps them)"
            scripts/services.sh down || true
        fi
    fi
    say "stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

other_leases() {  # true when another live process holds a lease on the services; drops stale leases
    local lease found=1
    for lease in "$LEASES"/*; do
        [[ -e "$lease" && "${lease##*/}" != "$$" ]] || continue
        if kill -0 "${lease##*/}" 2>/dev/null; then found=0; else rm -f "$lease"; fi
    done
    return "$found"
}

take_lease() { mkdir -p "$LEASES" && : >"$LEASES/$$"; }

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
# The lease comes first, so a scripts/test.sh run ending meanwhile does not stop services this run uses.
take_lease
if scripts/services.sh status >/dev/null 2>&1; then
    say "reusing the local services already running in $SVC_DIR (left running on exit)"
else
    say "starting local services (scripts/services.sh up)"
    SERVICES_STARTED=1
fi
scripts/services.sh up
take_lease   # again: a `services.sh down` racing with the check above removes $SVC_DIR with the lease
ENV_FILE="$(scripts/services.sh env)"
# shellcheck disable=SC1090
. "$ENV_FILE"
mkdir -p "$RUN_DIR"

# 3. Schema ------------------------------------------------------------------------------------
say "applying the database schema (baseline + migrations)"
"$PY" -m shared.store.migrate --baseline

# 4. local.settings.json (before seeding: the demo account's password is encrypted with its key) ----
if [[ ! -f local.settings.json ]]; then
    say "writing local.settings.json (from local.settings.json.example and the services' env)"
    "$PY" - <<'PYEOF'
import json, os, secrets
from pathlib import Path
example = Path("local.settings.json.example")
doc = json.loads(example.read_text()) if example.exists() else {"IsEncrypted": False, "Values": {}}
placeholders = dict(doc.get("Values", {}))
values = doc.setdefault("Values", {})
values.setdefault("FUNCTIONS_WORKER_RUNTIME", "python")
for name in ("AzureWebJobsStorage", "REDIS_URL", "DATABASE_URL", "IMAP_CA_FILE"):
    if os.environ.get(name):
        values[name] = os.environ[name]
# Keys for the local host's FUNCTION/ADMIN routes (func start does not check keys locally): the example's
# placeholders become random keys.
for name in ("DEVHOST_FUNCTION_KEY", "DEVHOST_MASTER_KEY"):
    if not values.get(name) or values[name] == placeholders.get(name):
        values[name] = secrets.token_urlsafe(24)
Path("local.settings.json").write_text(json.dumps(doc, indent=2) + "\n")
os.chmod("local.settings.json", 0o600)
PYEOF
fi

# 5. Stand-ins for Exotel (+ its recording server) and OpenAI, only without real credentials -----
# A setting counts as the host sees it: a non-empty environment variable, else local.settings.json.
# "No real credentials": the API key is empty or still the example's placeholder. The host gets the
# stand-ins' addresses through the environment, which wins over local.settings.json (with func start too).
eval "$("$PY" - <<'PYEOF'
import json, os, shlex
from pathlib import Path

def values(path):
    file = Path(path)
    if not file.exists():
        return {}
    return {k: "" if v is None else str(v) for k, v in json.loads(file.read_text()).get("Values", {}).items()}

local, example = values("local.settings.json"), values("local.settings.json.example")
for name in ("EXOTEL_SID", "EXOTEL_API_KEY", "EXOTEL_TOKEN", "EXOTEL_WHATSAPP_NUMBER", "EXOTEL_CALLBACK_SECRET",
             "OPENAI_API_KEY", "OPENAI_API_VERSION", "RECORDING_ALLOWED_HOSTS"):
    print(f"LS_{name}={shlex.quote(os.environ.get(name) or local.get(name, ''))}")
for name in ("EXOTEL_API_KEY", "OPENAI_API_KEY"):
    value = os.environ.get(name) or local.get(name, "")
    print(f"REAL_{name}={int(bool(value) and value != example.get(name))}")
PYEOF
)"

start_standin() {  # start_standin NAME PORT ARGS...: `python -m devhost.standins.NAME ARGS`, wait for PORT
    local name="$1" port="$2" pid; shift 2
    if port_open "$port"; then
        say "port $port for the $name stand-in is in use; pick another with ${name^^}_STANDIN_PORT=..."
        exit 1
    fi
    "$PY" -m "devhost.standins.$name" "$@" >"$RUN_DIR/$name.log" 2>&1 &
    pid=$!
    STANDIN_PIDS+=("$pid")
    STANDIN_LOGS+=("$RUN_DIR/$name.log")
    for _ in $(seq 1 100); do
        port_open "$port" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$RUN_DIR/$name.log" >&2 || true
    say "the $name stand-in did not open port $port (log: $RUN_DIR/$name.log)"
    exit 1
}

if [[ "$REAL_EXOTEL_API_KEY" == 1 ]]; then
    say "EXOTEL_API_KEY is configured: using the real Exotel (no Exotel or recording stand-in)"
else
    export EXOTEL_SID="${LS_EXOTEL_SID:-banxway-local}"
    export EXOTEL_API_KEY="${LS_EXOTEL_API_KEY:-local-standin-exotel-key}"
    export EXOTEL_TOKEN="${LS_EXOTEL_TOKEN:-local-standin-exotel-token}"
    export EXOTEL_WHATSAPP_NUMBER="${LS_EXOTEL_WHATSAPP_NUMBER:-+911140000000}"
    EXOTEL_CALLBACK_SECRET="${LS_EXOTEL_CALLBACK_SECRET:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(16))')}"
    export EXOTEL_CALLBACK_SECRET
    export EXOTEL_API_URL="http://127.0.0.1:$EXOTEL_STANDIN_PORT"
    # The stand-in posts delivery reports (SENT, then DELIVERED) to our whatsapp_status_callback function.
    export EXOTEL_STATUS_CALLBACK_URL="http://127.0.0.1:$PORT/api/whatsapp/status"
    export RECORDING_ALLOWED_HOSTS="${LS_RECORDING_ALLOWED_HOSTS:+$LS_RECORDING_ALLOWED_HOSTS,}127.0.0.1"
    export RECORDING_ALLOW_HTTP_HOSTS="127.0.0.1:$RECORDINGS_STANDIN_PORT"
    say "no real Exotel credentials: starting the Exotel and recording stand-ins"
    start_standin exotel "$EXOTEL_STANDIN_PORT" --port "$EXOTEL_STANDIN_PORT" --account-sid "$EXOTEL_SID" \
        --api-key "$EXOTEL_API_KEY" --api-token "$EXOTEL_TOKEN" \
        --dlr EX_MESSAGE_SENT --dlr EX_MESSAGE_DELIVERED --verbose
    start_standin recordings "$RECORDINGS_STANDIN_PORT" --port "$RECORDINGS_STANDIN_PORT" \
        --user "$EXOTEL_API_KEY" --password "$EXOTEL_TOKEN"
    STANDIN_INFO+=("Exotel stand-in      $EXOTEL_API_URL  (log $RUN_DIR/exotel.log)")
    STANDIN_INFO+=("recording stand-in   http://127.0.0.1:$RECORDINGS_STANDIN_PORT  (log $RUN_DIR/recordings.log)")
fi
if [[ "$REAL_OPENAI_API_KEY" == 1 ]]; then
    say "OPENAI_API_KEY is configured: using the real OpenAI (no stand-in)"
else
    export OPENAI_API_KEY="${LS_OPENAI_API_KEY:-sk-local-standin}"
    if [[ -n "$LS_OPENAI_API_VERSION" ]]; then  # Azure OpenAI mode: the endpoint, without /v1
        export OPENAI_BASE_URL="http://127.0.0.1:$OPENAI_STANDIN_PORT"
    else
        export OPENAI_BASE_URL="http://127.0.0.1:$OPENAI_STANDIN_PORT/v1"
    fi
    say "no real OpenAI credentials: starting the OpenAI stand-in"
    start_standin openai "$OPENAI_STANDIN_PORT" --port "$OPENAI_STANDIN_PORT" --api-key "$OPENAI_API_KEY"
    STANDIN_INFO+=("OpenAI stand-in      $OPENAI_BASE_URL  (log $RUN_DIR/openai.log)")
fi

# 6. Demo data: an email account on the local Dovecot (IMAPS, the services' CA) with a few emails, and a
# customer and thread with a pending WhatsApp message and a VOICE message to transcribe --------------
say "seeding the demo email account, emails and messages (scripts/seed_demo.py)"
DEMO_COMMANDS="$RUN_DIR/demo-commands.txt"
"$PY" scripts/seed_demo.py --recordings-url "http://127.0.0.1:$RECORDINGS_STANDIN_PORT" \
    --commands-file "$DEMO_COMMANDS" >/dev/null

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
tail -n +1 -F "$HOST_LOG" "${STANDIN_LOGS[@]}" 2>/dev/null &
TAIL_PID=$!

ready=0
for _ in $(seq 1 150); do
    kill -0 "$HOST_PID" 2>/dev/null || { say "the host exited; see $HOST_LOG"; exit 1; }
    if "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "http://127.0.0.1:$PORT/api/health" 2>/dev/null; then ready=1; break; fi
    sleep 0.2
done
[[ "$ready" == 1 ]] || { say "the host did not answer on port $PORT within 30 s; see $HOST_LOG"; exit 1; }

{
    printf '\nrun-local: ready\n'
    printf '  health               http://127.0.0.1:%s/api/health\n' "$PORT"
    printf '  function keys        DEVHOST_FUNCTION_KEY / DEVHOST_MASTER_KEY in local.settings.json (x-functions-key header or ?code=)\n'
    printf '  host log             %s\n' "$HOST_LOG"
    for line in "${STANDIN_INFO[@]}"; do printf '  %s\n' "$line"; done
    printf '  services env         %s   (source it to use the same Azurite/Redis/PostgreSQL/Dovecot)\n' "$ENV_FILE"
    printf '  services             Azurite blob %s queue %s table %s; Redis %s; PostgreSQL %s; IMAP %s / IMAPS %s\n' \
        "${AZ_BLOB_PORT:-10100}" "${AZ_QUEUE_PORT:-10101}" "${AZ_TABLE_PORT:-10102}" "${REDIS_PORT:-6390}" \
        "${PG_PORT:-5440}" "${IMAP_PORT:-10143}" "${IMAPS_PORT:-10993}"
    printf '  demo inbox           demo-inbox@banxway.local: its emails are ingested by the email_schedule_polls timer\n'
    printf '  try the workers      in another terminal: cd %s && . %s, then\n' "$ROOT" "$ENV_FILE"
    sed 's/^/                         /' "$DEMO_COMMANDS"
    if ((SERVICES_STARTED)); then
        printf '  Ctrl-C stops the host, the stand-ins and the services (KEEP_SERVICES=1 keeps the services)\n\n'
    else
        printf '  Ctrl-C stops the host and the stand-ins (the services were already running and stay up)\n\n'
    fi
} >&2
wait "$HOST_PID" || true
HOST_PID=""
say "the host exited; see $HOST_LOG"
