#!/usr/bin/env bash
# `make run`: the product on its embedded default, on loopback.
#   local Kafka → topics from the config → gateway (:8080, admin :8081)
#   → one consumer (admin :8082; the quickstart config adds the inspector page on :8090)
#
#   deploy/local/run.sh [CONFIG]        (default deploy/config/quickstart.yaml)
#
# Environment: GATEWAY_PORT (8080), GATEWAY_ADMIN_PORT (8081), CONSUMER_ADMIN_PORT (8082),
# INSPECTOR_PORT (8090), EVENTS_FILE (var/events.jsonl), LOG_FORMAT (text),
# CRYSTALLIZE_SIGNATURE_SECRET (else a development secret kept in DEV_SECRET_FILE,
# var/dev-secret), KAFKA_BOOTSTRAP_SERVERS (a broker to use instead of the local one).
#
# Ctrl-C stops everything this script started. The local Kafka keeps running, since
# starting it takes a while: `make kafka-down` stops it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
config="${1:-$root/deploy/config/quickstart.yaml}"
[ -f "$config" ] || { echo "run.sh: no config file $config" >&2; exit 1; }
config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"
py="${PY:-$root/.venv/bin/python}"
port="${GATEWAY_PORT:-8080}"
gateway_admin="${GATEWAY_ADMIN_PORT:-8081}"
consumer_admin="${CONSUMER_ADMIN_PORT:-8082}"
export INSPECTOR_PORT="${INSPECTOR_PORT:-8090}"
export LOG_FORMAT="${LOG_FORMAT:-text}"
cd "$root"

die() { echo "run.sh: $*" >&2; exit 1; }
# Paths as the user types them from the checkout (relative when inside it).
show() { case "$1" in "$root"/*) echo "${1#"$root"/}" ;; *) echo "$1" ;; esac; }

[ -x "$py" ] || die "no virtualenv at $(show "$py"): run \`make venv\` (or \`make run\`, which makes it)"

if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
    echo "run.sh: using the Kafka at $KAFKA_BOOTSTRAP_SERVERS"
else
    "$here/kafka.sh" up
    export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:${KAFKA_PORT:-9092}"
fi

# A development secret when none is set: generated once, kept in var/ (git-ignored),
# printed once, when it is made. Never do this in production.
secret_file="${DEV_SECRET_FILE:-$root/var/dev-secret}"
if [ -z "${CRYSTALLIZE_SIGNATURE_SECRET:-}" ]; then
    if [ ! -s "$secret_file" ]; then
        mkdir -p "$(dirname "$secret_file")"
        (umask 077 && "$py" -c 'import secrets; print(secrets.token_hex(24))' > "$secret_file")
        echo "run.sh: generated a development signature secret, kept in $(show "$secret_file"):"
        echo "  $(cat "$secret_file")"
    fi
    CRYSTALLIZE_SIGNATURE_SECRET="$(cat "$secret_file")"
    export CRYSTALLIZE_SIGNATURE_SECRET
    secret_step="export CRYSTALLIZE_SIGNATURE_SECRET=\"\$(cat $(show "$secret_file"))\""
else
    secret_step="export CRYSTALLIZE_SIGNATURE_SECRET=...   # the same secret this terminal has"
fi
export EVENTS_FILE="${EVENTS_FILE:-$root/var/events.jsonl}"
mkdir -p "$(dirname "$EVENTS_FILE")"

"$py" -m gateway topics create --config "$config"
# The first source, for the example command printed below.
read -r source_name source_path < <("$py" -c '
import sys
from gateway.config import load_config
source = load_config(sys.argv[1]).sources[0]
print(source.name, source.route_path)
' "$config")

names=()
pids=()
stop_all() {
    trap - INT TERM EXIT
    [ "${#pids[@]}" -gt 0 ] || return 0
    echo
    echo "run.sh: stopping ${names[*]}"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # Both drain in-flight work first (bounded by their shutdown grace settings);
    # whatever is still there after 60 s is killed, so nothing is left behind.
    for _ in $(seq 1 600); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "run.sh: stopped"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

"$py" -m gateway serve --config "$config" --host 127.0.0.1 --port "$port" \
    --admin-port "$gateway_admin" &
pids+=($!)
names+=(gateway)
"$py" -m consumers run --config "$config" --admin-host 127.0.0.1 \
    --admin-port "$consumer_admin" &
pids+=($!)
names+=(consumer)

ready() {
    "$py" - "$1" <<'PY' 2>/dev/null
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=1) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
}
waited=0
until ready "http://127.0.0.1:$gateway_admin/readyz" && ready "http://127.0.0.1:$consumer_admin/readyz"; do
    for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null || die "the ${names[$i]} exited during startup (its error is above)"
    done
    waited=$((waited + 1))
    [ "$waited" -le 600 ] || die "gateway and consumer not ready within 60 s"
    sleep 0.1
done

url_flag=""
[ "$port" = 8080 ] || url_flag=" --url http://127.0.0.1:$port"
inspector=""
if grep -q "type: inspector" "$config"; then
    inspector="  Inspector  http://127.0.0.1:$INSPECTOR_PORT/   (the latest events, live)"
fi
# `send` finds the quick-start file and its one source by itself; any other config is named.
send_flags=""
if [ "$(show "$config")" != "deploy/config/quickstart.yaml" ]; then
    send_flags=" --config $(show "$config") --source $source_name"
fi
cat <<MSG

  Ready.
  Gateway    http://127.0.0.1:$port$source_path   (metrics http://127.0.0.1:$gateway_admin/metrics)
  Consumer   writes every event to $(show "$EVENTS_FILE")   (metrics http://127.0.0.1:$consumer_admin/metrics)
$inspector

  Next, in another terminal, in $root:
    $secret_step
    .venv/bin/python -m gateway send$send_flags --example order$url_flag
    tail -n 1 $(show "$EVENTS_FILE")

  Ctrl-C here stops the gateway and the consumer.
MSG

# Until Ctrl-C (the INT trap), or until one of them exits on its own.
set +e
wait -n "${pids[@]}"
status=$?
set -e
for i in "${!pids[@]}"; do
    kill -0 "${pids[$i]}" 2>/dev/null || echo "run.sh: the ${names[$i]} exited (status $status)" >&2
done
exit "$status"
