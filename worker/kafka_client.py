"""Kafka client construction: one place that turns settings into kafka-python arguments."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from worker.config import Settings


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection and security arguments shared by consumers, producers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.kafka_security_protocol,
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
    }
    kwargs.update(overrides)
    return KafkaProducer(**kwargs)


def make_consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    """A consumer group member with manual commits."""
    kwargs: dict[str, Any] = {
        **security_kwargs(settings),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "max_poll_records": settings.max_poll_records,
    }
    kwargs.update(overrides)
    return KafkaConsumer(**kwargs)


def committed_total(settings: Settings) -> int:
    """Sum over the input topic's partitions of the group's committed offsets (for tests,
    benchmarks and ops checks: with offsets from 0, the number of records done)."""
    consumer = KafkaConsumer(
        **security_kwargs(settings), group_id=settings.group_id, enable_auto_commit=False
    )
    try:
        parts = consumer.partitions_for_topic(settings.input_topic) or set()
        return sum(consumer.committed(TopicPartition(settings.input_topic, p)) or 0 for p in parts)
    finally:
        consumer.close()
