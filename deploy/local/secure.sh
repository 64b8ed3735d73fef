# The secure profile of the local stack, sourced by stack.sh when it is given --secure.
#
#   bash deploy/local/stack.sh up --secure            start (idempotent), write .stack-secure/env
#   bash deploy/local/stack.sh status --secure
#   bash deploy/local/stack.sh down --secure [--purge]
#
# Runs beside the plain stack (own state dir .stack-secure/, own ports: Kafka 9192 with its
# controller on 9193, Redis 6380, each moved to a free port when taken), loopback only:
#   Kafka  one SASL_SSL listener for clients and for the broker itself: SCRAM-SHA-512 users
#          `modstream` (for clients) and `admin` (inter-broker), created when the storage is
#          formatted; TLS from a self-signed CA made at the first start-up (and again when
#          the broker certificate is within a day of expiry) with the broker certificate for
#          IP:127.0.0.1 and DNS:localhost. The KRaft controller listener stays PLAINTEXT on
#          127.0.0.1 (SCRAM cannot guard it: its credentials live in the metadata it serves).
#   Redis  an ACL user `modstream` with a password; the `default` user is disabled, so a
#          client without credentials gets NOAUTH.
# Passwords are random, made once and kept in .stack-secure/credentials (mode 600; the
# SCRAM users live in Kafka's metadata, so they go together: --purge deletes both).
# .stack-secure/env holds every MODSTREAM_* setting a worker needs, secrets included.
#
# Functions here use stack.sh's helpers and globals (STATE, KAFKA_DIR, REDIS_DIR, PY, log,
# die, kafka_up); only stack.sh calls them.

TLS_DIR="$STATE/tls"
CREDENTIALS="$STATE/credentials"
CA_DAYS=30

secure_load_credentials() {
    [[ -s "$CREDENTIALS" ]] || die "no $CREDENTIALS: run 'stack.sh up --secure'"
    # shellcheck source=/dev/null
    source "$CREDENTIALS"
}

random_secret() { openssl rand -hex 16; }

make_credentials() {
    log "making credentials ($CREDENTIALS)"
    cat >"$CREDENTIALS" <<EOF
# Made by deploy/local/secure.sh; the SCRAM users in Kafka's metadata were made from these.
SECURE_KAFKA_USER=modstream
SECURE_KAFKA_PASSWORD=$(random_secret)
SECURE_KAFKA_ADMIN_PASSWORD=$(random_secret)
SECURE_KEYSTORE_PASSWORD=$(random_secret)
SECURE_REDIS_USER=modstream
SECURE_REDIS_PASSWORD=$(random_secret)
EOF
    chmod 600 "$CREDENTIALS"
}

# A CA and a broker certificate signed by it, packed as a PKCS12 keystore for the broker.
make_tls() {
    command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install openssl)"
    log "making a self-signed CA and the broker certificate ($TLS_DIR)"
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    # One && chain: `set -e` does not hold inside a subshell that is followed by ||.
    (
        cd "$TLS_DIR" &&
            openssl req -x509 -newkey rsa:2048 -nodes -days "$CA_DAYS" -keyout ca.key -out ca.pem \
                -subj "/CN=modstream local CA $(date +%s)" \
                -addext "basicConstraints=critical,CA:TRUE" \
                -addext "keyUsage=critical,keyCertSign,cRLSign" &&
            openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr \
                -subj "/CN=localhost" &&
            printf '%s\n' "basicConstraints=CA:FALSE" \
                "keyUsage=critical,digitalSignature,keyEncipherment" \
                "extendedKeyUsage=serverAuth,clientAuth" \
                "subjectAltName=IP:127.0.0.1,DNS:localhost" >broker.ext &&
            openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -days "$CA_DAYS" -extfile broker.ext -out broker.pem &&
            openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem \
                -name broker -out broker.p12 -passout "env:SECURE_KEYSTORE_PASSWORD" &&
            rm -f broker.csr broker.ext ca.srl &&
            chmod 644 ca.pem # the only file clients need
    ) >"$STATE/tls.log" 2>&1 || { show_tail "$STATE/tls.log"; die "openssl could not make the certificates"; }
}

# Before `up` starts anything: credentials, and certificates unless a broker is using them.
secure_prepare() {
    local pid
    if [[ ! -s "$CREDENTIALS" ]]; then
        if [[ -e "$KAFKA_DIR/data" ]]; then
            log "no credentials for the existing Kafka data: deleting it to make new SCRAM users"
            if pid="$(live_pid "$KAFKA_DIR/kafka.pid")"; then stop_pid kafka "$pid"; fi
            rm -rf "$KAFKA_DIR/data"
        fi
        make_credentials
    fi
    secure_load_credentials
    export SECURE_KEYSTORE_PASSWORD
    if ! kafka_up && ! { [[ -s "$TLS_DIR/broker.p12" ]] &&
        openssl x509 -checkend 86400 -noout -in "$TLS_DIR/broker.pem" >/dev/null 2>&1; }; then
        make_tls
    fi
}

secure_purge() {
    rm -rf "$TLS_DIR" "$CREDENTIALS"
}

# `kafka-storage format --add-scram` arguments, one per line.
secure_scram_args() {
    secure_load_credentials
    printf '%s\n' --add-scram \
        "SCRAM-SHA-512=[name=$SECURE_KAFKA_USER,password=$SECURE_KAFKA_PASSWORD]" \
        --add-scram "SCRAM-SHA-512=[name=admin,password=$SECURE_KAFKA_ADMIN_PASSWORD]"
}

secure_listener_properties() {
    local broker_port="$1" controller_port="$2"
    secure_load_credentials
    cat <<EOF
listeners=SASL_SSL://127.0.0.1:$broker_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_SSL://127.0.0.1:$broker_port
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$SECURE_KAFKA_ADMIN_PASSWORD";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$SECURE_KEYSTORE_PASSWORD
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
ssl.client.auth=none
EOF
}

# redis-server reads the ACL users from a config file (not argv, where `ps` shows it).
secure_start_redis() {
    local bin="$1" port="$2"
    secure_load_credentials
    cat >"$REDIS_DIR/redis.conf" <<EOF
bind 127.0.0.1
port $port
daemonize yes
save ""
appendonly no
dir $REDIS_DIR
pidfile $REDIS_DIR/redis.pid
logfile $REDIS_DIR/redis.log
user default off
user $SECURE_REDIS_USER on >$SECURE_REDIS_PASSWORD ~* &* +@all
EOF
    "$bin" "$REDIS_DIR/redis.conf" 9>&- || { show_tail "$REDIS_DIR/redis.log"; die "redis-server failed to start"; }
}

# AUTH as the ACL user, then PING, over raw RESP; the password goes by environment.
secure_redis_ping() {
    local port="$1"
    [[ -s "$CREDENTIALS" ]] || return 1
    secure_load_credentials
    SECURE_REDIS_USER="$SECURE_REDIS_USER" SECURE_REDIS_PASSWORD="$SECURE_REDIS_PASSWORD" \
        python3 - "$port" <<'EOF' 2>/dev/null
import os, socket, sys

def command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)

with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
    s.sendall(command("AUTH", os.environ["SECURE_REDIS_USER"], os.environ["SECURE_REDIS_PASSWORD"]))
    if not s.recv(64).startswith(b"+OK"):
        sys.exit(1)
    s.sendall(command("PING"))
    sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
EOF
}

# A metadata request through SASL_SSL as the client user (TCP only without kafka-python).
secure_kafka_ping() {
    local port="$1"
    [[ -s "$CREDENTIALS" && -s "$TLS_DIR/ca.pem" ]] || return 1
    secure_load_credentials
    SECURE_KAFKA_USER="$SECURE_KAFKA_USER" SECURE_KAFKA_PASSWORD="$SECURE_KAFKA_PASSWORD" \
        "$PY" - "127.0.0.1:$port" "$TLS_DIR/ca.pem" <<'EOF' >/dev/null 2>&1
import os, sys
try:
    from kafka import KafkaAdminClient
except Exception:
    sys.exit(0)
admin = KafkaAdminClient(
    bootstrap_servers=sys.argv[1], request_timeout_ms=5000, client_id="modstream-stack-probe",
    security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", ssl_cafile=sys.argv[2],
    sasl_plain_username=os.environ["SECURE_KAFKA_USER"],
    sasl_plain_password=os.environ["SECURE_KAFKA_PASSWORD"],
)
try:
    admin.list_topics()
finally:
    admin.close()
EOF
}

secure_write_env() {
    local kafka_port="$1" redis_port="$2"
    secure_load_credentials
    cat >"$ENV_FILE" <<EOF
# The secure local stack (deploy/local/stack.sh up --secure). Holds secrets: mode 600.
export MODSTREAM_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$kafka_port
export MODSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL
export MODSTREAM_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
export MODSTREAM_KAFKA_SASL_USERNAME=$SECURE_KAFKA_USER
export MODSTREAM_KAFKA_SASL_PASSWORD=$SECURE_KAFKA_PASSWORD
export MODSTREAM_KAFKA_SSL_CAFILE=$TLS_DIR/ca.pem
export MODSTREAM_REDIS_URL=redis://$SECURE_REDIS_USER:$SECURE_REDIS_PASSWORD@127.0.0.1:$redis_port/0
EOF
    chmod 600 "$ENV_FILE"
}

secure_print_endpoints() {
    secure_load_credentials
    echo "kafka: 127.0.0.1:$1 (SASL_SSL, SCRAM-SHA-512 user $SECURE_KAFKA_USER, CA $TLS_DIR/ca.pem)"
    echo "redis: redis://$SECURE_REDIS_USER:***@127.0.0.1:$2/0"
    echo "env:   source $ENV_FILE   (holds the passwords)"
}
