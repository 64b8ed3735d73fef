"""A real ``modstream run`` process, killed mid-stream and started again."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from tests.fakes import REQUIRED_METRICS
from tests.integration.helpers import (
    create_topics,
    events,
    free_port,
    metrics_on,
    scrape,
    settings_for,
    start_worker,
    to_bytes,
    verdict_keys,
    wait_for,
)
from worker.kafka_client import make_producer

pytestmark = pytest.mark.integration


def test_killed_worker_restarts_without_losing_a_post_and_serves_metrics(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    settings = settings_for(services, run_id)
    create_topics(settings)
    posts = events(run_id, 400)
    producer = make_producer(settings)
    for event in posts:
        producer.send(settings.input_topic, key=event["post_id"].encode(), value=to_bytes(event))
    producer.flush()
    client = redis.Redis.from_url(services.redis_url)

    port = free_port()
    first = start_worker(settings, log, **metrics_on(port))
    try:
        wait_for(lambda: len(verdict_keys(client, run_id)) >= 60, 180, "the first verdicts")
        body = scrape(port)
        for name in (*REQUIRED_METRICS, "modstream_consumer_lag_records", "modstream_model_info"):
            assert name in body, name
        first.send_signal(signal.SIGKILL)  # no drain, no commit: the worst case
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    done_before = len(verdict_keys(client, run_id))
    assert done_before < 400, "the stream should still be mid-way when killed"

    # More events arrive while the worker is down.
    for event in events(run_id, 100, start=400):
        producer.send(settings.input_topic, key=event["post_id"].encode(), value=to_bytes(event))
    producer.flush()
    producer.close()

    second = start_worker(settings, log, **metrics_on(port))
    try:
        wait_for(lambda: len(verdict_keys(client, run_id)) >= 500, 240, "all 500 verdicts")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
    assert {k.decode().rsplit(":", 1)[1] for k in verdict_keys(client, run_id)} == {
        f"{run_id}-{i}" for i in range(500)
    }
