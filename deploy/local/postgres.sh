#!/usr/bin/env bash
# PostgreSQL on loopback for development and tests (Debian package postgresql).
#   deploy/local/postgres.sh up|down|status     PG_PORT (default 5439)
# Trust authentication on 127.0.0.1 only, database `webhooks`, user `webhooks`.
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
port="${PG_PORT:-5439}"
state="$state_root/postgres-$port"
# As root the server runs as `postgres`, which cannot enter a checkout under a private
# home directory (e.g. /root): then the cluster lives under /var/tmp instead.
mkdir -p "$state_root"
if [ "$(id -u)" = "0" ] && ! runuser -u postgres -- test -x "$state_root" 2>/dev/null; then
    state="/var/tmp/webhook-gateway/postgres-$port"
fi
data="$state/data"

pgbin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    return 1
}

as_pg() {
    if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

up() {
    local bin
    bin="$(pgbin)" || { ensure_pkg /usr/lib/postgresql/_none_ postgresql; bin="$(pgbin)"; } \
        || die "postgresql installed but no pg_ctl under /usr/lib/postgresql/*/bin"
    mkdir -p "$state"
    exec 9>"$state/.lock"; flock 9
    if wait_port 127.0.0.1 "$port" 1; then
        echo "postgres.sh: already answering on 127.0.0.1:$port"; return 0
    fi
    if [ "$(id -u)" = "0" ]; then chown postgres:postgres "$state"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >"$state/initdb.log" 2>&1 \
            || die "initdb failed; see $state/initdb.log"
        cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$state'
fsync = on
max_connections = 200
CONF
    fi
    as_pg "$bin/pg_ctl" -D "$data" -l "$state/postgres.log" -w -t 60 start >/dev/null 9>&- \
        || die "postgres did not start; see $state/postgres.log"
    # Idempotent role and database.
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qtAc \
        "SELECT 1 FROM pg_roles WHERE rolname='webhooks'" | grep -q 1 \
        || as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE ROLE webhooks LOGIN SUPERUSER"
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname='webhooks'" | grep -q 1 \
        || as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE webhooks OWNER webhooks"
    echo "postgres.sh: ready on 127.0.0.1:$port (postgresql://webhooks@127.0.0.1:$port/webhooks)"
}

down() {
    local bin
    if [ -f "$data/postmaster.pid" ] && bin="$(pgbin)"; then
        as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null && echo "postgres.sh: stopped" \
            || die "pg_ctl stop failed"
    else
        echo "postgres.sh: not running"
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) wait_port 127.0.0.1 "$port" 1 && echo "postgres.sh: answering on $port" || { echo "postgres.sh: not running"; exit 1; } ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
