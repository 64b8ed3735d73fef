"""Start-up errors for Kafka and Redis name the setting to fix and never hold the secret.
(Against the real secure stack: tests/integration/test_security.py.)"""

from __future__ import annotations

import socket
import threading

import pytest
from kafka.errors import KafkaTimeoutError

from worker.config import load_settings
from worker.errors import StartupError
from worker.kafka_client import connect_failure_message, explain_connect_failure
from worker.sinks.redis import connect_redis, redacted_url

SECRET = "s3cret-value"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_kafka_is_named_and_the_password_is_not_shown() -> None:
    settings = load_settings(
        kafka_bootstrap_servers=f"127.0.0.1:{closed_port()}",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password=SECRET,
    )
    with pytest.raises(StartupError) as info, explain_connect_failure(settings):
        raise KafkaTimeoutError(f"Unable to bootstrap (password {SECRET})")
    message = str(info.value)
    assert "MODSTREAM_KAFKA_BOOTSTRAP_SERVERS" in message and "is not reachable" in message
    assert SECRET not in message and "***" in message


def test_a_kafka_that_accepts_connections_but_not_the_login_names_the_sasl_settings() -> None:
    with socket.socket() as server:  # accepts TCP, then nothing: like a broker that hangs up
        server.bind(("127.0.0.1", 0))
        server.listen()
        settings = load_settings(
            kafka_bootstrap_servers=f"127.0.0.1:{server.getsockname()[1]}",
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="u",
            kafka_sasl_password=SECRET,
        )
        message = connect_failure_message(settings, KafkaTimeoutError("Unable to bootstrap"))
    assert "MODSTREAM_KAFKA_SASL_PASSWORD" in message
    assert "MODSTREAM_KAFKA_SASL_USERNAME=u" in message
    assert SECRET not in message


def test_a_kafka_without_tls_fails_the_handshake_of_an_ssl_client() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        settings = load_settings(
            kafka_bootstrap_servers=f"127.0.0.1:{server.getsockname()[1]}",
            kafka_security_protocol="SSL",
        )

        # A plain TCP listener that hangs up when the probe says hello in TLS.
        def hang_up() -> None:
            conn, _ = server.accept()
            conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        message = connect_failure_message(settings, KafkaTimeoutError("Unable to bootstrap"))
    assert "failed the TLS handshake" in message
    assert "MODSTREAM_KAFKA_SECURITY_PROTOCOL=SSL" in message


def test_an_unreachable_redis_is_named_and_the_password_is_not_shown() -> None:
    url = f"redis://user:{SECRET}@127.0.0.1:{closed_port()}/0"
    with pytest.raises(StartupError) as info:
        connect_redis(load_settings(redis_url=url, sink_timeout_seconds=2))
    message = str(info.value)
    assert "MODSTREAM_REDIS_URL=redis://user:***@127.0.0.1:" in message
    assert "does not answer" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://u:p%40ss@h:6379/0", "redis://u:***@h:6379/0"),
        ("rediss://:pw@h/1", "rediss://:***@h/1"),
    ],
)
def test_redacted_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
