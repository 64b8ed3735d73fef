"""A run of its own on a Kafka + Redis stack: settings for its topics and group, the topics
created, the environment of a ``python -m worker`` child, waiting for a condition.

Used by tests/integration/helpers.py and benchmarks/worker_phases.py alike, so that a test
and a benchmark phase set up a run the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka.admin import KafkaAdminClient, NewTopic

from worker.config import Settings, load_settings
from worker.kafka_client import security_kwargs


def run_settings(bootstrap_servers: str, redis_url: str, run_id: str, **overrides: Any) -> Settings:
    """Settings for run ``run_id`` on a stack: input ``posts-ID``, output ``verdicts-ID``,
    dead letters ``posts-ID.dlq``, group ``modstream-ID``, metrics off; ``overrides`` win
    (a key prefix of its own, batch sizes, ...)."""
    fields: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap_servers,
        "redis_url": redis_url,
        "input_topic": f"posts-{run_id}",
        "output_topic": f"verdicts-{run_id}",
        "dlq_topic": f"posts-{run_id}.dlq",
        "group_id": f"modstream-{run_id}",
        "metrics_port": 0,
    }
    return load_settings(**{**fields, **overrides})


def create_topics(
    settings: Settings, partitions: int = 4, topics: Sequence[str] | None = None
) -> None:
    """Create ``topics`` (default: the settings' input, output and dead-letter topics) with
    ``partitions`` each and one replica, through the settings' security (TLS, SASL)."""
    names = topics or (settings.input_topic, settings.output_topic, settings.dlq_topic)
    admin = KafkaAdminClient(**security_kwargs(settings))
    try:
        admin.create_topics([NewTopic(t, partitions, 1) for t in names])
    finally:
        admin.close()


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m worker`` child for ``settings``' endpoints, topics,
    group and Redis keys (nothing MODSTREAM_* inherited), small batches on the CPU, metrics
    off unless ``extra`` sets them. ``extra`` keys are MODSTREAM_* names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODSTREAM_")}
    env.update(
        {
            "MODSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "MODSTREAM_REDIS_URL": settings.redis_url.get_secret_value(),
            "MODSTREAM_INPUT_TOPIC": settings.input_topic,
            "MODSTREAM_OUTPUT_TOPIC": settings.output_topic,
            "MODSTREAM_DLQ_TOPIC": settings.dlq_topic,
            "MODSTREAM_GROUP_ID": settings.group_id,
            "MODSTREAM_PROCESSING_GUARANTEE": settings.processing_guarantee,
            "MODSTREAM_REDIS_KEY_PREFIX": settings.redis_key_prefix,
            "MODSTREAM_REDIS_TTL_SECONDS": str(settings.redis_ttl_seconds),
            "MODSTREAM_METRICS_PORT": "0",
            "MODSTREAM_BATCH_MAX_SIZE": "16",
            "MODSTREAM_DEVICE": "cpu",
            **extra,
        }
    )
    return env


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, every_s: float = 0.25
) -> None:
    """Return once ``predicate()`` holds, checking every ``every_s``; raise TimeoutError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every_s)
