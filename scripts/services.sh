#!/usr/bin/env bash
# Local services for tests and local runs: Azurite (blob/queue/table), Redis, a throwaway PostgreSQL
# cluster and Dovecot (IMAP + IMAPS), all on non-default ports and all state under $SVC_DIR.
#
#   scripts/services.sh up       start what is not running yet (idempotent); writes $SVC_DIR/env.sh
#   scripts/services.sh down     stop what this script started and remove $SVC_DIR
#   scripts/services.sh status   one line per service; exit 0 when every service is usable
#   scripts/services.sh env      print the env file path (source it: `. "$(scripts/services.sh env)"`)
#
# A service given by the environment is reused, not started: REDIS_URL, DATABASE_URL,
# AzureWebJobsStorage, IMAP_HOST (+ IMAP_PORT, IMAPS_PORT, IMAP_USER, IMAP_PASSWORD, IMAP_CA_FILE).
# Values that point at this script's own instances (e.g. after sourcing env.sh) do not count as given.
# Ports (env-overridable): AZ_BLOB_PORT 10100, AZ_QUEUE_PORT 10101, AZ_TABLE_PORT 10102, REDIS_PORT 6390,
# PG_PORT 5440, IMAP_PORT 10143, IMAPS_PORT 10993. IMAP users: test@example.com and other@example.com
# (password secret), plus any name @throwaway.test (password secret) for per-test mailboxes.
# Run as root on Debian 12: missing packages are installed with apt-get, PostgreSQL runs as `postgres`,
# Dovecot switches to uid 65534 for mail. Facts behind the flags: shared/reference/local-services.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SVC_DIR="${SVC_DIR:-/tmp/banxway-services}"
SVC_DIR="${SVC_DIR%/}"
AZURITE_DIR="${AZURITE_DIR:-$ROOT/tools/azurite}"
AZ_BLOB_PORT="${AZ_BLOB_PORT:-10100}"
AZ_QUEUE_PORT="${AZ_QUEUE_PORT:-10101}"
AZ_TABLE_PORT="${AZ_TABLE_PORT:-10102}"
REDIS_PORT="${REDIS_PORT:-6390}"
PG_PORT="${PG_PORT:-5440}"
IMAP_PORT_OWN="${IMAP_PORT:-10143}"
IMAPS_PORT_OWN="${IMAPS_PORT:-10993}"

ENV_FILE="$SVC_DIR/env.sh"
LOCK_FILE="$SVC_DIR.lock"   # beside, not inside: `down` removes $SVC_DIR
HOST=127.0.0.1
# Azurite's well-known development account key (public; documented by Microsoft).
AZ_ACCOUNT=devstoreaccount1
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
MAIL_UID=65534   # Dovecot refuses root as the mail user; nobody/nogroup
MAIL_GID=65534
THROWAWAY_DOMAIN=throwaway.test   # any user@ this domain is a valid, empty IMAP account (password secret)

OWN_REDIS_URL="redis://$HOST:$REDIS_PORT/0"
OWN_DATABASE_URL="postgresql://postgres@$HOST:$PG_PORT/app"
OWN_STORAGE="DefaultEndpointsProtocol=http;AccountName=$AZ_ACCOUNT;AccountKey=$AZ_KEY;"
OWN_STORAGE+="BlobEndpoint=http://$HOST:$AZ_BLOB_PORT/$AZ_ACCOUNT;"
OWN_STORAGE+="QueueEndpoint=http://$HOST:$AZ_QUEUE_PORT/$AZ_ACCOUNT;"
OWN_STORAGE+="TableEndpoint=http://$HOST:$AZ_TABLE_PORT/$AZ_ACCOUNT;"
OWN_DOVECOT_CONF="$SVC_DIR/dovecot/dovecot.conf"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [[ "$(id -u)" == 0 ]]; }

# --- which services are given by the environment -------------------------------------------------
external_redis() { [[ -n "${REDIS_URL:-}" && "$REDIS_URL" != "$OWN_REDIS_URL" ]]; }
external_pg() { [[ -n "${DATABASE_URL:-}" && "$DATABASE_URL" != "$OWN_DATABASE_URL" ]]; }
external_azurite() { [[ -n "${AzureWebJobsStorage:-}" && "$AzureWebJobsStorage" != "$OWN_STORAGE" ]]; }
external_imap() { [[ -n "${IMAP_HOST:-}" && "${DOVECOT_CONF:-}" != "$OWN_DOVECOT_CONF" ]]; }

# Mask passwords in URLs and account keys before printing a connection value.
redact() { sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#; s#(AccountKey=)[^;]*#\1***#'; }

# --- helpers -------------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

pid_alive() {  # pid_alive PID NAME_FRAGMENT: the process exists and its command line mentions NAME
    local pid="$1" name="$2"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name"
}

pid_from() { [[ -s "$1" ]] && head -n1 "$1" | tr -dc '0-9' || true; }

tail_log() {
    local file="$1"
    if [[ -s "$file" ]]; then
        printf -- '--- last lines of %s ---\n' "$file" >&2
        tail -n 25 "$file" >&2
    else
        printf -- '--- %s is empty or missing ---\n' "$file" >&2
    fi
}

# wait_ports NAME TIMEOUT_S LOG PID_OR_EMPTY PORT...: fail with the log tail if one stays closed.
wait_ports() {
    local name="$1" timeout_s="$2" logfile="$3" pid="$4"; shift 4
    local deadline=$((SECONDS + timeout_s)) port
    for port in "$@"; do
        until port_open "$port"; do
            if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
                tail_log "$logfile"
                die "$name exited before opening $HOST:$port (see log above)"
            fi
            if ((SECONDS >= deadline)); then
                tail_log "$logfile"
                die "$name did not open $HOST:$port within ${timeout_s}s (see log above)"
            fi
            sleep 0.05
        done
    done
}

# refuse_busy NAME VAR PORT...: a port held by something we did not start is an error, not a reuse.
refuse_busy() {
    local name="$1" var="$2" port; shift 2
    for port in "$@"; do
        if port_open "$port"; then
            die "$name: port $port is in use by a program not started from $SVC_DIR. Stop it, pick" \
                "other ports (see the variables at the top of scripts/services.sh), or reuse it by" \
                "setting $var."
        fi
    done
}

# stop_pid NAME PID: SIGTERM, wait up to 8 s, then SIGKILL.
stop_pid() {
    local name="$1" pid="$2" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 160; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    log "$name (pid $pid) ignored SIGTERM for 8s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

wait_ports_closed() {
    local port i
    for port in "$@"; do
        for ((i = 0; i < 100; i++)); do
            port_open "$port" || break
            sleep 0.05
        done
        port_open "$port" && log "WARNING: port $port is still open"
    done
    return 0
}

pg_bin() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
    [[ -n "$d" && -x "$d/initdb" ]] && printf '%s' "$d"
}

as_postgres() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }

# --- install -------------------------------------------------------------------------------------
ensure_packages() {
    local missing=()
    if ! external_imap; then
        command -v dovecot >/dev/null && command -v doveadm >/dev/null || missing+=(dovecot-imapd)
        command -v openssl >/dev/null || missing+=(openssl)
    fi
    if ! external_redis; then
        command -v redis-server >/dev/null || missing+=(redis-server)
    fi
    if ! external_pg; then
        { [[ -n "$(pg_bin)" ]] && command -v psql >/dev/null; } || missing+=(postgresql)
    fi
    if ((${#missing[@]})); then
        is_root || die "missing packages: ${missing[*]}. Run as root, or install them:" \
            "sudo apt-get install -y ${missing[*]}"
        log "installing ${missing[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 9>&-
    fi
    if ! external_azurite && [[ ! -x "$AZURITE_DIR/node_modules/.bin/azurite" ]]; then
        command -v npm >/dev/null || die "npm not found: install Node.js 20 (azurite 3.35.0 is pinned" \
            "for it in tools/azurite/package.json)"
        log "npm ci in $AZURITE_DIR"
        (cd "$AZURITE_DIR" && npm ci --silent --no-audit --no-fund >/dev/null)
    fi
}

# --- Azurite -------------------------------------------------------------------------------------
AZ_D="$SVC_DIR/azurite"
azurite_pid() { local p; p="$(pid_from "$AZ_D/pid")"; pid_alive "$p" azurite && printf '%s' "$p"; }

up_azurite() {
    if azurite_pid >/dev/null; then return 0; fi
    refuse_busy azurite AzureWebJobsStorage "$AZ_BLOB_PORT" "$AZ_QUEUE_PORT" "$AZ_TABLE_PORT"
    mkdir -p "$AZ_D"
    # In memory: state never outlives the process, and --location must not be combined with it.
    (cd "$AZ_D" && exec setsid "$AZURITE_DIR/node_modules/.bin/azurite" --silent --inMemoryPersistence \
        --disableTelemetry --loose --skipApiVersionCheck \
        --blobHost "$HOST" --blobPort "$AZ_BLOB_PORT" \
        --queueHost "$HOST" --queuePort "$AZ_QUEUE_PORT" \
        --tableHost "$HOST" --tablePort "$AZ_TABLE_PORT" \
        </dev/null >"$AZ_D/azurite.log" 2>&1 9>&-) &
    echo "$!" >"$AZ_D/pid"
    wait_ports azurite 30 "$AZ_D/azurite.log" "$!" "$AZ_BLOB_PORT" "$AZ_QUEUE_PORT" "$AZ_TABLE_PORT"
}

down_azurite() {
    local p
    p="$(azurite_pid)" || return 0
    stop_pid azurite "$p"
    wait_ports_closed "$AZ_BLOB_PORT" "$AZ_QUEUE_PORT" "$AZ_TABLE_PORT"
}

# --- Redis ---------------------------------------------------------------------------------------
RD_D="$SVC_DIR/redis"
redis_pid() { local p; p="$(pid_from "$RD_D/redis.pid")"; pid_alive "$p" redis-server && printf '%s' "$p"; }

up_redis() {
    if redis_pid >/dev/null; then return 0; fi
    refuse_busy redis REDIS_URL "$REDIS_PORT"
    mkdir -p "$RD_D"
    rm -f "$RD_D/redis.pid"
    redis-server --port "$REDIS_PORT" --bind "$HOST" --save '' --appendonly no --daemonize yes \
        --dir "$RD_D" --pidfile "$RD_D/redis.pid" --logfile "$RD_D/redis.log" </dev/null >"$RD_D/start.log" 2>&1 9>&- \
        || { tail_log "$RD_D/start.log"; tail_log "$RD_D/redis.log"; die "redis-server failed to start"; }
    wait_ports redis 10 "$RD_D/redis.log" "" "$REDIS_PORT"
}

down_redis() {
    local p
    p="$(redis_pid)" || return 0
    # SHUTDOWN answers at once; SIGTERM waits for the next server tick (~1.5 s).
    redis-cli -h "$HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    stop_pid redis "$p"
    wait_ports_closed "$REDIS_PORT"
}

# --- PostgreSQL ----------------------------------------------------------------------------------
PG_D="$SVC_DIR/pg"
pg_pid() { local p; p="$(pid_from "$PG_D/data/postmaster.pid")"; pid_alive "$p" postgres && printf '%s' "$p"; }

up_pg() {
    local bin
    bin="$(pg_bin)" || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
    if ! pg_pid >/dev/null; then
        refuse_busy postgresql DATABASE_URL "$PG_PORT"
        mkdir -p "$PG_D"
        is_root && chown postgres:postgres "$PG_D"
        if [[ ! -s "$PG_D/data/PG_VERSION" ]]; then
            as_postgres "$bin/initdb" -D "$PG_D/data" -U postgres --auth=trust --no-sync -E UTF8 \
                --locale=C.UTF-8 >"$PG_D/initdb.log" 2>&1 || { tail_log "$PG_D/initdb.log"; die "initdb failed"; }
        fi
        # Durability off: a throwaway cluster for tests.
        as_postgres "$bin/pg_ctl" -D "$PG_D/data" -l "$PG_D/pg.log" -w -t 30 \
            -o "-p $PG_PORT -k $PG_D -c listen_addresses=$HOST -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start </dev/null >/dev/null 2>&1 9>&- || { tail_log "$PG_D/pg.log"; die "PostgreSQL failed to start"; }
        wait_ports postgresql 10 "$PG_D/pg.log" "" "$PG_PORT"
    fi
    local psql=(psql -X -q -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -tA)
    if [[ -z "$(PGPASSWORD='' "${psql[@]}" -c "select 1 from pg_database where datname = 'app'")" ]]; then
        PGPASSWORD='' "${psql[@]}" -c 'create database app' >/dev/null
    fi
}

down_pg() {
    local bin
    pg_pid >/dev/null || return 0
    bin="$(pg_bin)"
    as_postgres "$bin/pg_ctl" -D "$PG_D/data" -m immediate -w -t 10 stop >/dev/null 2>&1 \
        || log "WARNING: pg_ctl stop failed"
    wait_ports_closed "$PG_PORT"
}

# --- Dovecot -------------------------------------------------------------------------------------
DV_D="$SVC_DIR/dovecot"
dovecot_pid() { local p; p="$(pid_from "$DV_D/run/master.pid")"; pid_alive "$p" dovecot && printf '%s' "$p"; }

write_dovecot_conf() {  # prints "changed" when the file content changed
    # Absolute paths: Dovecot does not expand variables in these settings.
    local tmp="$OWN_DOVECOT_CONF.tmp.$$"
    cat >"$tmp" <<EOF
# Generated by scripts/services.sh for tests; not a system config.
protocols = imap
listen = $HOST
base_dir = $DV_D/run
state_dir = $DV_D/state
instance_name = banxway-test-dovecot
log_path = $DV_D/dovecot.log
ssl = yes
ssl_cert = <$DV_D/tls/cert.pem
ssl_key = <$DV_D/tls/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests check refused logins: no delay after a failure, and no growing per-IP penalty (the anvil
# socket below is made unusable) that would slow later logins from 127.0.0.1 by 2-15 s.
auth_failure_delay = 0
first_valid_uid = 1
mail_location = maildir:$DV_D/mail/%u/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DV_D/users
}
# Throwaway test users: any name @$THROWAWAY_DOMAIN logs in with password "secret" and starts empty.
passdb {
  driver = static
  args = password=secret
  username_filter = *@$THROWAWAY_DOMAIN
}
userdb {
  driver = static
  args = uid=$MAIL_UID gid=$MAIL_GID home=$DV_D/mail/%u
}
service imap-login {
  inet_listener imap {
    address = $HOST
    port = $IMAP_PORT_OWN
  }
  inet_listener imaps {
    address = $HOST
    port = $IMAPS_PORT_OWN
    ssl = yes
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
}
EOF
    if cmp -s "$tmp" "$OWN_DOVECOT_CONF"; then rm -f "$tmp"; else mv -f "$tmp" "$OWN_DOVECOT_CONF"; echo changed; fi
}

up_dovecot() {
    if dovecot_pid >/dev/null; then
        # Running: only pick up a config this script now writes differently (e.g. after an upgrade).
        if [[ "$(write_dovecot_conf)" == changed ]]; then
            log "dovecot: config changed; reloading"
            doveadm -c "$OWN_DOVECOT_CONF" reload 9>&-
        fi
        return 0
    fi
    is_root || die "Dovecot needs root (it switches to uid $MAIL_UID for mail). Run as root, or give an" \
        "IMAP server with IMAP_HOST/IMAP_PORT/IMAPS_PORT/IMAP_USER/IMAP_PASSWORD/IMAP_CA_FILE."
    refuse_busy dovecot IMAP_HOST "$IMAP_PORT_OWN" "$IMAPS_PORT_OWN"
    mkdir -p "$DV_D"/{run,state,mail,tls}
    chown "$MAIL_UID:$MAIL_GID" "$DV_D/mail"
    if [[ ! -s "$DV_D/tls/cert.pem" ]]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
            -addext "subjectAltName=DNS:localhost,IP:$HOST" \
            -keyout "$DV_D/tls/key.pem" -out "$DV_D/tls/cert.pem" >/dev/null 2>&1 \
            || die "openssl could not create the self-signed certificate"
        chmod 0644 "$DV_D/tls/cert.pem"
    fi
    if [[ ! -e "$DV_D/users" ]]; then
        # The two fixed test accounts (throwaway ones come from the static passdb).
        printf '%s\n' 'test@example.com:{PLAIN}secret' 'other@example.com:{PLAIN}secret' >"$DV_D/users"
        chmod 0644 "$DV_D/users"
    fi
    write_dovecot_conf >/dev/null
    dovecot -c "$OWN_DOVECOT_CONF" </dev/null >>"$DV_D/start.log" 2>&1 9>&- \
        || { tail_log "$DV_D/start.log"; tail_log "$DV_D/dovecot.log"; die "dovecot failed to start"; }
    wait_ports dovecot 10 "$DV_D/dovecot.log" "" "$IMAP_PORT_OWN" "$IMAPS_PORT_OWN"
}

down_dovecot() {
    local p
    p="$(dovecot_pid)" || return 0
    # The master runs in its own process group (it calls setsid); signalling the whole group stops
    # it and its children together, which is faster than letting the master stop them one by one.
    if [[ "$(ps -o pgid= -p "$p" | tr -d ' ')" == "$p" ]]; then kill -TERM -- "-$p" 2>/dev/null || true; fi
    stop_pid dovecot "$p"
    wait_ports_closed "$IMAP_PORT_OWN" "$IMAPS_PORT_OWN"
}

# --- env file ------------------------------------------------------------------------------------
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }  # POSIX single-quoting
export_line() { printf 'export %s=%s\n' "$1" "$(sq "$2")"; }

write_env() {
    local tmp="$ENV_FILE.tmp.$$"
    {
        echo "# Written by scripts/services.sh up; source it before running tests."
        export_line SVC_DIR "$SVC_DIR"
        if external_redis; then echo "# REDIS_URL given by the environment"; export_line REDIS_URL "$REDIS_URL"
        else export_line REDIS_URL "$OWN_REDIS_URL"; fi
        if external_pg; then echo "# DATABASE_URL given by the environment"; export_line DATABASE_URL "$DATABASE_URL"
        else export_line DATABASE_URL "$OWN_DATABASE_URL"; fi
        if external_azurite; then
            echo "# AzureWebJobsStorage given by the environment"
            export_line AzureWebJobsStorage "$AzureWebJobsStorage"
        else export_line AzureWebJobsStorage "$OWN_STORAGE"; fi
        if external_imap; then
            echo "# IMAP server given by the environment"
            local v
            for v in IMAP_HOST IMAP_PORT IMAPS_PORT IMAP_USER IMAP_PASSWORD IMAP_CA_FILE DOVECOT_CONF \
                IMAP_THROWAWAY_DOMAIN; do
                [[ -n "${!v:-}" ]] && export_line "$v" "${!v}"
            done
        else
            export_line IMAP_HOST "$HOST"
            export_line IMAP_PORT "$IMAP_PORT_OWN"
            export_line IMAPS_PORT "$IMAPS_PORT_OWN"
            export_line IMAP_USER test@example.com
            export_line IMAP_PASSWORD secret
            export_line IMAP_CA_FILE "$DV_D/tls/cert.pem"
            export_line DOVECOT_CONF "$OWN_DOVECOT_CONF"
            export_line IMAP_THROWAWAY_DOMAIN "$THROWAWAY_DOMAIN"
        fi
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
}

# --- commands ------------------------------------------------------------------------------------
with_lock() {  # serialise up/down between concurrent callers sharing one SVC_DIR
    mkdir -p "$(dirname "$SVC_DIR")"
    exec 9>"$LOCK_FILE"
    flock -w 180 9 || die "another services.sh holds $LOCK_FILE for over 180s"
    # Every daemon below is started with 9>&- so it does not inherit (and keep) this lock.
}

cmd_up() {
    with_lock
    ensure_packages
    mkdir -p "$SVC_DIR"
    chmod 0755 "$SVC_DIR"   # postgres and the Dovecot mail user must traverse it
    if external_azurite; then log "azurite: reusing AzureWebJobsStorage"; else up_azurite; fi
    if external_redis; then log "redis: reusing REDIS_URL"; else up_redis; fi
    if external_pg; then log "postgresql: reusing DATABASE_URL"; else up_pg; fi
    if external_imap; then log "dovecot: reusing IMAP_HOST"; else up_dovecot; fi
    write_env
    log "ready; env file: $ENV_FILE"
}

cmd_down() {
    with_lock
    [[ -d "$SVC_DIR" ]] || return 0
    # Only what this script started (recognised by its pid files), never a reused or foreign service.
    # In parallel: each waits for its own process to exit.
    down_azurite &
    down_redis &
    down_pg &
    down_dovecot &
    wait
    if azurite_pid >/dev/null || redis_pid >/dev/null || pg_pid >/dev/null || dovecot_pid >/dev/null; then
        die "some services are still running; $SVC_DIR kept"
    fi
    case "$SVC_DIR" in
        "" | / | /tmp | "$HOME") die "refusing to remove SVC_DIR=$SVC_DIR" ;;
    esac
    rm -rf "$SVC_DIR"
    log "stopped; removed $SVC_DIR"
}

cmd_status() {
    local rc=0 p
    report() { printf '%-11s %s\n' "$1" "$2"; }
    if external_azurite; then report azurite "given: $(printf '%s' "$AzureWebJobsStorage" | redact)"
    elif p="$(azurite_pid)"; then report azurite "up (pid $p, ports $AZ_BLOB_PORT/$AZ_QUEUE_PORT/$AZ_TABLE_PORT)"
    else report azurite down; rc=3; fi
    if external_redis; then report redis "given: $(printf '%s' "$REDIS_URL" | redact)"
    elif p="$(redis_pid)"; then report redis "up (pid $p, port $REDIS_PORT)"
    else report redis down; rc=3; fi
    if external_pg; then report postgresql "given: $(printf '%s' "$DATABASE_URL" | redact)"
    elif p="$(pg_pid)"; then report postgresql "up (pid $p, port $PG_PORT)"
    else report postgresql down; rc=3; fi
    if external_imap; then report dovecot "given: $IMAP_HOST:${IMAP_PORT:-?}/${IMAPS_PORT:-?}"
    elif p="$(dovecot_pid)"; then report dovecot "up (pid $p, ports $IMAP_PORT_OWN/$IMAPS_PORT_OWN)"
    else report dovecot down; rc=3; fi
    if [[ -s "$ENV_FILE" ]]; then report env "$ENV_FILE"; else report env "(not written)"; fi
    return "$rc"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) printf '%s\n' "$ENV_FILE" ;;
    *) printf 'usage: %s up|down|status|env\n' "$0" >&2; exit 2 ;;
esac
