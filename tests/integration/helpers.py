"""Helpers for integration tests: settings for a test's own topics, producing, reading back."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import redis
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from worker.config import Settings, load_settings


def settings_for(services: Any, run_id: str, **overrides: Any) -> Settings:
    return load_settings(
        kafka_bootstrap_servers=services.kafka,
        redis_url=services.redis_url,
        input_topic=f"posts-{run_id}",
        output_topic=f"verdicts-{run_id}",
        dlq_topic=f"posts-{run_id}.dlq",
        group_id=f"modstream-{run_id}",
        metrics_port=0,
        batch_max_wait_ms=20,
        shutdown_grace_seconds=10,
        **overrides,
    )


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m worker`` child for ``settings``' endpoints, topics and
    group (nothing MODSTREAM_* inherited), small batches on the CPU, metrics off unless
    ``extra`` sets them. ``extra`` keys are MODSTREAM_* names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODSTREAM_")}
    env.update(
        {
            "MODSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "MODSTREAM_REDIS_URL": settings.redis_url.get_secret_value(),
            "MODSTREAM_INPUT_TOPIC": settings.input_topic,
            "MODSTREAM_OUTPUT_TOPIC": settings.output_topic,
            "MODSTREAM_DLQ_TOPIC": settings.dlq_topic,
            "MODSTREAM_GROUP_ID": settings.group_id,
            "MODSTREAM_METRICS_PORT": "0",
            "MODSTREAM_BATCH_MAX_SIZE": "16",
            "MODSTREAM_DEVICE": "cpu",
            **extra,
        }
    )
    return env


def create_topics(settings: Settings, partitions: int = 4) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        admin.create_topics(
            [
                NewTopic(t, partitions, 1)
                for t in (settings.input_topic, settings.output_topic, settings.dlq_topic)
            ]
        )
    finally:
        admin.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def verdict_keys(client: redis.Redis, run_id: str) -> list[bytes]:
    return list(client.scan_iter(match=f"modstream:verdict:{run_id}-*", count=1000))


def read_topic(
    settings: Settings,
    topic: str,
    expected: int,
    timeout: float = 30.0,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Every record of ``topic`` (stops once ``expected`` are read or the topic is quiet)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=3000,
        isolation_level=isolation_level,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            got = consumer.poll(timeout_ms=500)
            for batch in got.values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def events(run_id: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    texts = [
        "Great game tonight, so proud of the team!",
        "The council meets on Tuesday.",
        "Drinking bleach cures covid, share before they delete it",
        "I hate waiting in this queue forever",
    ]
    return [
        {"post_id": f"{run_id}-{i}", "text": texts[i % len(texts)], "author_id": f"u{i % 50}"}
        for i in range(start, start + n)
    ]


def to_bytes(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()
