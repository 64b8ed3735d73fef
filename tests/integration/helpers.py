"""Helpers for integration tests: settings for a test's own topics, producing, reading back.
Setting a run up on the stack (settings, topics, a worker child's environment, waiting) is
shared with the benchmarks in modstream_dev/stack.py."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from kafka import KafkaConsumer

from modstream_dev.stack import child_env as child_env
from modstream_dev.stack import create_topics as create_topics
from modstream_dev.stack import run_settings
from modstream_dev.stack import wait_for as wait_for
from worker.config import Settings


def settings_for(services: Any, run_id: str, **overrides: Any) -> Settings:
    """A test's own topics and group (see run_settings), short batch waits and grace."""
    return run_settings(
        services.kafka,
        services.redis_url,
        run_id,
        **{"batch_max_wait_ms": 20, "shutdown_grace_seconds": 10, **overrides},
    )


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
