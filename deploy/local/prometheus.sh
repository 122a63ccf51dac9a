#!/usr/bin/env bash
# Prometheus on loopback for `make run` (Debian package prometheus, which brings promtool).
#   deploy/local/prometheus.sh install|up|down|status     PROM_PORT (default 9099)
# `up` scrapes the gateway admin port 8081 and the consumer admin port 8082 (job names
# webhook-gateway / webhook-consumers) and loads deploy/prometheus/rules. `install`
# only makes sure prometheus and promtool exist (the tests need them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
port="${PROM_PORT:-9099}"
state="$state_root/prometheus-$port"

install() {
    ensure_pkg prometheus prometheus
    ensure_pkg promtool prometheus
}

up() {
    install
    mkdir -p "$state/data"
    exec 9>"$state/.lock"; flock 9
    if wait_port 127.0.0.1 "$port" 1; then
        echo "prometheus.sh: already answering on 127.0.0.1:$port"; return 0
    fi
    cat > "$state/prometheus.yml" <<YAML
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: ["$root/deploy/prometheus/rules/*.yml"]
scrape_configs:
  - job_name: webhook-gateway
    static_configs: [{targets: ["127.0.0.1:${GATEWAY_ADMIN_PORT:-8081}"]}]
  - job_name: webhook-consumers
    static_configs: [{targets: ["127.0.0.1:${CONSUMER_ADMIN_PORT:-8082}"]}]
YAML
    promtool check config "$state/prometheus.yml" >/dev/null || die "invalid $state/prometheus.yml"
    nohup prometheus --config.file="$state/prometheus.yml" --storage.tsdb.path="$state/data" \
        --web.listen-address="127.0.0.1:$port" >"$state/prometheus.log" 2>&1 9>&- &
    echo $! > "$state/prometheus.pid"
    wait_port 127.0.0.1 "$port" 30 || die "prometheus did not start; see $state/prometheus.log"
    echo "prometheus.sh: ready on http://127.0.0.1:$port"
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) stop_pid "$state/prometheus.pid" prometheus ;;
    status) wait_port 127.0.0.1 "$port" 1 && echo "prometheus.sh: answering on $port" || { echo "prometheus.sh: not running"; exit 1; } ;;
    *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
