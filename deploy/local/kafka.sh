#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, combined broker+controller) on loopback, from
# Maven Central jars: no Docker, no download from Apache's site.
#
#   deploy/local/kafka.sh up|down|status|jars
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1),
# WG_STATE_DIR (var/local), WG_CACHE_DIR (.cache). Idempotent: `up` on a running
# broker only re-probes it; `down` waits until the JVM is gone.
#
# A second listener, SASL_SSL, as managed clusters have (the tests of TLS and SASL use it):
# KAFKA_SASL_SSL_PORT (its port on 127.0.0.1), KAFKA_TLS_KEYSTORE
# (a PKCS12 file with the broker's key and certificate) and KAFKA_TLS_PASSWORD,
# KAFKA_SASL_USERS ("name:password,..."; SCRAM-SHA-256/512 credentials are written when the
# storage is formatted, so set it on a fresh WG_STATE_DIR; PLAIN takes the same users).
# OAUTHBEARER accepts Kafka's unsecured (unsigned) test tokens on that listener.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${KAFKA_PORT:-9092}"
cport="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
state="${WG_STATE_DIR:-$root/var/local}/kafka-$port"
cache="${WG_CACHE_DIR:-$root/.cache}/kafka"
libs="$cache/libs"
pidfile="$state/kafka.pid"
log="$state/kafka.log"

die() { echo "kafka.sh: $*" >&2; exit 1; }

need_java() {
    command -v java >/dev/null 2>&1 || die "Java is missing: install a JDK 17+ (Debian: apt-get install openjdk-17-jre-headless)"
}

jars() {
    if [ -f "$libs/.complete" ]; then return 0; fi
    command -v mvn >/dev/null 2>&1 || die "Maven is missing: it fetches the Kafka jars from Maven Central (Debian: apt-get install maven)"
    need_java
    echo "kafka.sh: fetching Kafka jars from Maven Central into $libs"
    rm -rf "$libs"
    mkdir -p "$cache"
    if ! mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$libs" -DincludeScope=runtime >"$cache/mvn.log" 2>&1; then
        tail -n 20 "$cache/mvn.log" >&2
        die "mvn could not resolve deploy/local/pom.xml (is Maven Central reachable?); log: $cache/mvn.log"
    fi
    touch "$libs/.complete"
}

running_pid() {
    [ -f "$pidfile" ] || return 1
    local pid
    pid="$(cat "$pidfile")"
    kill -0 "$pid" 2>/dev/null && grep -q "kafka.Kafka" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

sasl_port="${KAFKA_SASL_SSL_PORT:-}"

sasl_properties() {
    [ -n "$sasl_port" ] || return 0
    [ -f "${KAFKA_TLS_KEYSTORE:-}" ] || die "KAFKA_SASL_SSL_PORT needs KAFKA_TLS_KEYSTORE (a PKCS12 file)"
    local plain_users="" entry
    IFS=',' read -ra entries <<<"${KAFKA_SASL_USERS:-}"
    for entry in "${entries[@]}"; do
        plain_users="$plain_users user_${entry%%:*}=\"${entry#*:}\""
    done
    cat <<PROPS
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain_users;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_TLS_KEYSTORE
listener.name.sasl_ssl.ssl.keystore.password=${KAFKA_TLS_PASSWORD:-}
PROPS
}

scram_args() {
    local entry
    IFS=',' read -ra entries <<<"${KAFKA_SASL_USERS:-}"
    for entry in "${entries[@]}"; do
        for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
            printf '%s\n' "--add-scram" "$mech=[name=${entry%%:*},password=${entry#*:}]"
        done
    done
}

write_config() {
    mkdir -p "$state/data"
    local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
    local advertised="PLAINTEXT://127.0.0.1:$port"
    if [ -n "$sasl_port" ]; then
        listeners="$listeners,SASL_SSL://127.0.0.1:$sasl_port"
        advertised="$advertised,SASL_SSL://127.0.0.1:$sasl_port"
    fi
    cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$state/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Topics are created from the gateway's config (python -m gateway topics create),
# never by a typo in a producer: the same rule as a production cluster.
auto.create.topics.enable=false
log.retention.hours=24
PROPS
    sasl_properties >> "$state/server.properties"
    cat > "$state/log4j2.yaml" <<'L4J'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
L4J
}

up() {
    need_java
    jars
    mkdir -p "$state"
    # One `up` at a time: parallel test sessions may all try to start the broker.
    exec 9>"$state/.lock"
    flock 9
    if pid="$(running_pid)"; then
        python3 "$here/kafka_probe.py" "127.0.0.1:$port" --timeout 60 \
            || die "broker pid $pid is running but not answering; see $log"
        echo "kafka.sh: already running on 127.0.0.1:$port (pid $pid)"
        return 0
    fi
    if python3 "$here/kafka_probe.py" "127.0.0.1:$port" >/dev/null 2>&1; then
        echo "kafka.sh: a broker not started by this script already answers on 127.0.0.1:$port; using it"
        return 0
    fi
    write_config
    local cp="$libs/*"
    local java_opts=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$state/log4j2.yaml")
    if [ ! -f "$state/data/meta.properties" ]; then
        local cid
        cid="$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
        local scram=()
        mapfile -t scram < <(scram_args)
        java "${java_opts[@]}" -cp "$cp" kafka.tools.StorageTool format \
            -t "$cid" -c "$state/server.properties" "${scram[@]}" >"$state/format.log" 2>&1 \
            || die "storage format failed; see $state/format.log"
    fi
    nohup java "${java_opts[@]}" -cp "$cp" kafka.Kafka "$state/server.properties" \
        >"$log" 2>&1 </dev/null 9>&- &
    echo $! > "$pidfile"
    if ! python3 "$here/kafka_probe.py" "127.0.0.1:$port" --timeout 90; then
        tail -n 30 "$log" >&2 || true
        die "broker did not become ready within 90 s; log: $log"
    fi
    echo "kafka.sh: ready on 127.0.0.1:$port (pid $(cat "$pidfile"), log $log)"
}

down() {
    local pid
    if pid="$(running_pid)"; then
        kill -TERM "$pid"
        for _ in $(seq 1 200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "kafka.sh: broker did not stop within 20 s; killing pid $pid" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "kafka.sh: stopped (pid $pid)"
    else
        echo "kafka.sh: not running on port $port"
    fi
    rm -f "$pidfile"
}

status() {
    if pid="$(running_pid)"; then
        echo "kafka.sh: running on 127.0.0.1:$port (pid $pid)"
    else
        echo "kafka.sh: not running on port $port"
        return 1
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    jars) jars ;;
    *) echo "usage: $0 up|down|status|jars" >&2; exit 2 ;;
esac
