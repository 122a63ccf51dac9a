#!/usr/bin/env bash
# Redis on loopback for development and tests (Debian package redis-server).
#   deploy/local/redis.sh up|down|status     REDIS_PORT (default 6399)
# A non-default port so a system Redis on 6379 is never touched.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
port="${REDIS_PORT:-6399}"
state="$state_root/redis-$port"

up() {
    local bin=/usr/bin/redis-server
    command -v redis-server >/dev/null 2>&1 && bin="$(command -v redis-server)"
    ensure_pkg "$bin" redis-server
    mkdir -p "$state"
    exec 9>"$state/.lock"; flock 9
    if wait_port 127.0.0.1 "$port" 1; then
        echo "redis.sh: already answering on 127.0.0.1:$port"; return 0
    fi
    "$bin" --bind 127.0.0.1 --port "$port" --dir "$state" --daemonize yes \
        --pidfile "$state/redis.pid" --logfile "$state/redis.log" \
        --save "" --appendonly no --protected-mode yes 9>&-
    wait_port 127.0.0.1 "$port" 20 || die "redis did not start; see $state/redis.log"
    echo "redis.sh: ready on 127.0.0.1:$port"
}

case "${1:-}" in
    up) up ;;
    down) stop_pid "$state/redis.pid" redis ;;
    status) wait_port 127.0.0.1 "$port" 1 && echo "redis.sh: answering on $port" || { echo "redis.sh: not running"; exit 1; } ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
