"""Start-up errors for Kafka and Redis name the setting to fix and never hold the secret.
(Against the real secure stack: tests/integration/test_security.py.)"""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest
from kafka.errors import KafkaTimeoutError

from worker.config import load_settings
from worker.errors import StartupError, UnavailableError
from worker.kafka_client import (
    connect_failure,
    connect_failure_message,
    explain_connect_failure,
)
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
    assert isinstance(info.value, UnavailableError)  # worth waiting for at start-up


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
        error = connect_failure(settings, KafkaTimeoutError("Unable to bootstrap"))
        message = str(error)
    assert not isinstance(error, UnavailableError)  # a refused login: exit 3 at once
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
    assert isinstance(info.value, UnavailableError)  # worth waiting for at start-up


def serve_replies(reply: bytes) -> socket.socket:
    """A loopback server that answers every request on every connection with ``reply``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client may hang up at any point
            while conn.recv(4096):
                conn.sendall(reply)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server


def test_a_redis_that_refuses_the_login_fails_at_once_and_hides_the_password() -> None:
    with serve_replies(b"-WRONGPASS invalid username-password pair\r\n") as server:
        url = f"redis://user:{SECRET}@127.0.0.1:{server.getsockname()[1]}/0"
        with pytest.raises(StartupError) as info:
            connect_redis(load_settings(redis_url=url, sink_timeout_seconds=2))
    assert not isinstance(info.value, UnavailableError)
    message = str(info.value)
    assert "refused the login" in message and "MODSTREAM_REDIS_URL" in message
    assert SECRET not in message


def test_a_redis_still_loading_its_data_is_waited_for() -> None:
    with serve_replies(b"-LOADING Redis is loading the dataset in memory\r\n") as server:
        url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        with pytest.raises(UnavailableError):
            connect_redis(load_settings(redis_url=url, sink_timeout_seconds=2))


def test_tls_spoken_to_a_plain_redis_port_is_a_setting_to_fix() -> None:
    with serve_replies(b"-ERR unknown command\r\n") as server:
        url = f"rediss://127.0.0.1:{server.getsockname()[1]}/0"
        with pytest.raises(StartupError) as info:
            connect_redis(load_settings(redis_url=url, sink_timeout_seconds=2))
    assert not isinstance(info.value, UnavailableError)
    assert "fails the TLS connection" in str(info.value)


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
