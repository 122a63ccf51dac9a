# Shared helpers for the local service scripts (sourced, not run).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state_root="${WG_STATE_DIR:-$root/var/local}"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# ensure_pkg COMMAND DEBIAN-PACKAGE: install the package when the command is missing,
# with apt-get when we are root; otherwise say exactly what to install.
ensure_pkg() {
    local cmd="$1" pkg="$2"
    if command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ]; then return 0; fi
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "$(basename "$0"): installing Debian package $pkg (for $cmd)"
        export DEBIAN_FRONTEND=noninteractive
        # A lock in a shared folder: parallel sessions must not run apt at once.
        (
            flock 8
            apt-get update -qq >/dev/null && apt-get install -y -qq "$pkg" >/dev/null
        ) 8>/tmp/webhook-gateway-apt.lock || die "apt-get install $pkg failed"
    else
        die "$cmd is missing: install the Debian package '$pkg' (apt-get install $pkg) or set the service URL in the environment"
    fi
}

# wait_port HOST PORT SECONDS
wait_port() {
    local host="$1" port="$2" secs="$3" i
    for i in $(seq 1 $((secs * 10))); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# stop_pid PIDFILE NAME: TERM, wait up to 20 s, then KILL.
stop_pid() {
    local pidfile="$1" name="$2" pid
    if [ -f "$pidfile" ] && pid="$(head -n1 "$pidfile")" && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        echo "$(basename "$0"): $name stopped (pid $pid)"
    else
        echo "$(basename "$0"): $name not running"
    fi
}
