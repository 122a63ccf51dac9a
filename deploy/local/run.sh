#!/usr/bin/env bash
# `make run`: the product on its embedded default, on loopback.
#   local Kafka → topics from the config → gateway (:8080, admin :8081) → one consumer (admin :8082)
# Ctrl-C stops everything this script started (the local Kafka keeps running: `make kafka-down`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
config="${1:-$root/deploy/config/quickstart.yaml}"
py="${PY:-$root/.venv/bin/python}"
port="${GATEWAY_PORT:-8080}"
cd "$root"

"$here/kafka.sh" up

# A development secret when none is set: generated once, kept in var/ (git-ignored),
# printed so you can sign test requests with it. Never do this in production.
mkdir -p var
if [ -z "${CRYSTALLIZE_SIGNATURE_SECRET:-}" ]; then
    if [ ! -s var/dev-secret ]; then
        "$py" -c 'import secrets; print(secrets.token_hex(24))' > var/dev-secret
        chmod 600 var/dev-secret
        echo "run.sh: generated a development signature secret in var/dev-secret: $(cat var/dev-secret)"
    fi
    CRYSTALLIZE_SIGNATURE_SECRET="$(cat var/dev-secret)"
    export CRYSTALLIZE_SIGNATURE_SECRET
fi
export EVENTS_FILE="${EVENTS_FILE:-$root/var/events.jsonl}"

"$py" -m gateway topics create --config "$config"

pids=()
cleanup() {
    trap - INT TERM EXIT
    echo
    echo "run.sh: stopping gateway and consumer"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

"$py" -m gateway serve --config "$config" --host 127.0.0.1 --port "$port" &
pids+=($!)
"$py" -m consumers run --config "$config" &
pids+=($!)

for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:8081/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done

cat <<MSG

  Gateway:   http://127.0.0.1:$port/webhooks/crystallize   (metrics: http://127.0.0.1:8081/metrics)
  Consumer:  writes every event to $EVENTS_FILE        (metrics: http://127.0.0.1:8082/metrics)

  Send a signed Crystallize webhook (in another terminal):
    .venv/bin/python -m gateway send --config $config --source crystallize --example order

  Watch it arrive:
    tail -f $EVENTS_FILE

  Ctrl-C stops the gateway and the consumer.
MSG
wait -n "${pids[@]}"
