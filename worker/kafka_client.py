"""Kafka client construction: one place that turns settings into kafka-python arguments."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from worker.config import Settings
from worker.errors import StartupError, UnavailableError

log = logging.getLogger(__name__)

# kafka-python's own metrics (per-record and per-request sensors, in Python): the worker
# reads none of them (its Prometheus metrics are its own), and recording them took an eighth
# of the producer's network thread's time under load, on the interpreter lock every stage
# shares.
CLIENT_METRICS = False


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection and security arguments shared by consumers, producers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.kafka_security_protocol,
        # The Java client's default. kafka-python's (30 s) spaces reconnection attempts up to
        # 30 s apart once a broker has been down a while, so a worker took up to half a
        # minute more to notice that a restarted broker was back (the fault test's broker
        # restart, down 20 s: 9-37 s to recover with 30 s, 1.0-2.5 s with 1 s).
        "reconnect_backoff_max_ms": 1000,
    }
    if settings.kafka_sasl_mechanism is not None:
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    for name in ("cafile", "certfile", "keyfile"):
        value = getattr(settings, f"kafka_ssl_{name}")
        if value is not None:
            kwargs[f"ssl_{name}"] = str(value)
    return kwargs


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and never reorders a partition."""
    kwargs: dict[str, Any] = {
        **security_kwargs(settings),
        "acks": "all",
        "linger_ms": 5,
        "retries": 5,
        "max_in_flight_requests_per_connection": 1,
        "request_timeout_ms": int(settings.sink_timeout_seconds * 1000),
        "metrics_enabled": CLIENT_METRICS,
    }
    kwargs.update(overrides)
    with explain_connect_failure(settings):
        return KafkaProducer(**kwargs)


def close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close ``producer`` within about ``timeout_s``, abandoning records it cannot deliver.

    kafka-python's ``close(timeout)`` flushes first and raises KafkaTimeoutError when records
    are still undelivered at the timeout (a broker down, a transaction the broker aborted),
    leaving its network thread running; the Java producer force-closes instead. Abandoning
    them loses nothing: their input offsets were never committed (at-least-once), or their
    transaction is aborted (exactly-once), so they are produced again from the input."""
    try:
        producer.close(timeout=timeout_s)
        return
    except KafkaTimeoutError:
        log.warning(
            "the Kafka producer could not deliver its last records within %.1fs; closing it "
            "without them (their input offsets are not committed: they are processed again)",
            timeout_s,
        )
    # kafka-python has no public force close: stop its network thread as the Java client's
    # close(0) does, which fails the pending futures, then close the rest (nothing is left
    # to flush).
    sender = producer._sender
    sender.force_close()
    sender.join(timeout_s)
    if sender.is_alive():  # a daemon thread: it cannot hold the process at exit
        log.error("the Kafka producer's network thread did not stop within %.1fs", timeout_s)
        return
    producer.close(timeout=0)


def make_consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    """A consumer group member with manual commits."""
    kwargs: dict[str, Any] = {
        **security_kwargs(settings),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "max_poll_records": settings.max_poll_records,
        "metrics_enabled": CLIENT_METRICS,
    }
    kwargs.update(overrides)
    with explain_connect_failure(settings):
        return KafkaConsumer(**kwargs)


def committed_total(settings: Settings, consumer: KafkaConsumer | None = None) -> int:
    """Sum over the input topic's partitions of the group's committed offsets (for tests,
    benchmarks and ops checks: with offsets from 0, the number of records done).
    ``consumer``: one of the settings' group to ask through (a caller that polls keeps one
    open); by default one made and closed for the call."""
    own = consumer is None
    if consumer is None:
        consumer = KafkaConsumer(
            **security_kwargs(settings), group_id=settings.group_id, enable_auto_commit=False
        )
    try:
        parts = consumer.partitions_for_topic(settings.input_topic) or set()
        return sum(consumer.committed(TopicPartition(settings.input_topic, p)) or 0 for p in parts)
    finally:
        if own:
            consumer.close()


@contextmanager
def explain_connect_failure(settings: Settings) -> Iterator[None]:
    """Turn a client that cannot bootstrap into a StartupError naming the setting to fix.

    kafka-python retries the bootstrap until a timeout that does not say why, and a broker
    that rejects SASL credentials just closes the connection; so on failure this probes the
    first broker step by step (TCP, then TLS with the configured files) to say which step
    fails. Nothing extra happens when the client connects. A broker that does not answer
    at all raises :class:`UnavailableError` (worth waiting for); a refused login or a TLS
    mismatch, a plain :class:`StartupError`.
    """
    try:
        yield
    except KafkaError as exc:
        raise connect_failure(settings, exc) from exc


def connect_failure(settings: Settings, error: BaseException) -> StartupError:
    """The error to raise when a client cannot bootstrap; its message never holds the SASL
    password."""
    where = f"Kafka at MODSTREAM_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}"
    detail = str(error)
    if not detail.startswith(type(error).__name__):
        detail = f"{type(error).__name__}: {detail}"
    why, transient = _probe(settings)
    text = f"{where} {why} ({detail})"
    secret = settings.kafka_sasl_password
    if secret is not None and secret.get_secret_value():
        text = text.replace(secret.get_secret_value(), "***")
    return UnavailableError(text) if transient else StartupError(text)


def connect_failure_message(settings: Settings, error: BaseException) -> str:
    """Why Kafka cannot be used; never holds the SASL password."""
    return str(connect_failure(settings, error))


def _probe(settings: Settings) -> tuple[str, bool]:
    """Which connection step to the first broker fails, as the rest of a sentence, and
    whether waiting may help: nothing listening (a broker that is down or still starting),
    or a plaintext port that accepts but does not answer yet. A refused login or a TLS
    failure is a setting to fix."""
    reason = _probe_steps(settings)
    return reason, reason.startswith(("is not reachable", "accepts connections but does not"))


def _probe_steps(settings: Settings) -> str:
    protocol = f"MODSTREAM_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
    sasl = (
        "refused the SASL login: check MODSTREAM_KAFKA_SASL_USERNAME="
        f"{settings.kafka_sasl_username}, MODSTREAM_KAFKA_SASL_PASSWORD and "
        f"MODSTREAM_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}"
    )
    host, _, port = settings.bootstrap_servers[0].strip().rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    except (OSError, ValueError) as exc:
        return f"is not reachable ({exc})"
    with sock:
        if "SSL" not in settings.kafka_security_protocol:
            if settings.kafka_sasl_mechanism is not None:
                return f"accepts connections but {sasl}, or expects another {protocol}"
            return f"accepts connections but does not answer as Kafka: check {protocol}"
        try:
            context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
            if settings.kafka_ssl_certfile is not None:
                context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            return f"cannot be reached: a MODSTREAM_KAFKA_SSL_* file is not usable ({exc})"
        try:
            with context.wrap_socket(sock, server_hostname=host.strip("[]")):
                pass
        except ssl.SSLCertVerificationError as exc:
            cafile = settings.kafka_ssl_cafile or "(unset: the system's CAs)"
            return (
                f"has a TLS certificate that MODSTREAM_KAFKA_SSL_CAFILE={cafile} does not "
                f"verify ({exc.verify_message})"
            )
        except (OSError, ssl.SSLError) as exc:
            return f"failed the TLS handshake: check {protocol} and MODSTREAM_KAFKA_SSL_* ({exc})"
    if settings.kafka_sasl_mechanism is not None:
        return f"accepts TLS but {sasl}"
    return "accepts TLS but does not answer as Kafka"
