"""Helpers for integration tests: settings for a test's own topics, producing, reading back.
Setting a run up on the stack (settings, topics, a worker child's environment, waiting) is
shared with the benchmarks in modstream_dev/stack.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition

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


def read_to_end(
    settings: Settings, topic: str, isolation_level: str = "read_uncommitted"
) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now (a read_committed reader: up to
    its last stable offsets, only records of committed transactions). Unlike
    :func:`read_topic` it does not stop at an expected count, so it sees duplicates."""
    consumer, parts = _reader(settings, topic, isolation_level)
    try:
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def end_offsets(settings: Settings, topic: str, isolation_level: str) -> dict[int, int]:
    """Per partition of ``topic``, its high watermark (``read_uncommitted``) or its last
    stable offset (``read_committed``: before the first record of a transaction still open)."""
    consumer, parts = _reader(settings, topic, isolation_level)
    try:
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def _reader(
    settings: Settings, topic: str, isolation_level: str
) -> tuple[KafkaConsumer, list[TopicPartition]]:
    """A consumer of no group (the caller closes it), and ``topic``'s partitions."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        isolation_level=isolation_level,
    )
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    return consumer, parts


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


def start_worker(settings: Settings, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """A ``python -m worker run`` child for ``settings`` (see :func:`child_env`; ``extra``
    are more MODSTREAM_* variables), its output appended to ``log``."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=child_env(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    """The /metrics text a child serves on 127.0.0.1:``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metrics_on(port: int) -> dict[str, str]:
    """The child settings that serve /metrics, /healthz and /readyz on 127.0.0.1:``port``."""
    return {"MODSTREAM_METRICS_PORT": str(port), "MODSTREAM_METRICS_HOST": "127.0.0.1"}
