"""Exactly-once mode against the real broker: a worker killed with -9 mid-stream and
started again, and a worker whose producer is fenced; a ``read_committed`` reader of the
output and dead-letter topics sees every post exactly once."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.integration.helpers import (
    create_topics,
    events,
    read_topic,
    settings_for,
    start_worker,
    to_bytes,
    verdict_keys,
    wait_for,
)
from worker.config import Settings
from worker.kafka_client import committed_total, make_producer

pytestmark = pytest.mark.integration

POSTS = 400
BROKEN = 10
SINK_TIMEOUT_S = 60


def eos_env(settings: Settings) -> dict[str, str]:
    return {
        "MODSTREAM_PROCESSING_GUARANTEE": "exactly-once",
        "MODSTREAM_TRANSACTIONAL_ID": f"{settings.group_id}-worker-0",
        "MODSTREAM_COMMIT_INTERVAL_MS": "300",
        "MODSTREAM_MAX_PENDING_RECORDS": "50",  # small transactions: the kill lands mid-way
        "MODSTREAM_MAX_POLL_RECORDS": "50",
    }


def test_kill_9_and_restart_gives_read_committed_readers_each_post_once(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    settings = settings_for(services, run_id)
    create_topics(settings)
    producer = make_producer(settings)
    for i, event in enumerate(events(run_id, POSTS)):
        producer.send(settings.input_topic, key=event["post_id"].encode(), value=to_bytes(event))
        if i % (POSTS // BROKEN) == 0:
            producer.send(settings.input_topic, key=b"broken", value=b"{not json")
    producer.flush()
    producer.close()
    total = POSTS + BROKEN
    client = redis.Redis.from_url(services.redis_url)

    first = start_worker(settings, log, **eos_env(settings))
    try:
        # Killed once at least one transaction committed and more is in flight.
        wait_for(lambda: committed_total(settings) > 0, 180, "a first committed transaction")
        wait_for(lambda: len(verdict_keys(client, run_id)) >= 100, 120, "verdicts in flight")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    committed_at_kill = committed_total(settings)
    assert committed_at_kill < total, "the stream should still be mid-way when killed"

    started = time.monotonic()
    second = start_worker(settings, log, **eos_env(settings))
    try:
        wait_for(lambda: committed_total(settings) == total, 240, "every offset committed")
        recovered_s = time.monotonic() - started
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()

    committed = read_topic(settings, settings.output_topic, POSTS, isolation_level="read_committed")
    seen = Counter(json.loads(r.value)["post_id"] for r in committed)
    assert set(seen) == {f"{run_id}-{i}" for i in range(POSTS)}
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:5]
    letters = read_topic(settings, settings.dlq_topic, BROKEN, isolation_level="read_committed")
    assert len(letters) == BROKEN
    # Everything the first worker wrote after its last commit was aborted: a
    # read_uncommitted reader sees those repeats, a read_committed one does not.
    raw = read_topic(settings, settings.output_topic, 2 * POSTS, timeout=10)
    repeats = len(raw) - POSTS
    assert len(verdict_keys(client, run_id)) == POSTS
    print(
        f"exactly-once kill -9: posts {POSTS}, read_committed verdicts {len(committed)}, "
        f"duplicates 0, aborted writes seen by read_uncommitted {repeats}, "
        f"committed at kill {committed_at_kill}/{total}, recovery to all committed "
        f"{recovered_s:.1f}s"
    )


def test_a_fenced_worker_starts_again_in_place_and_read_committed_sees_each_post_once(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    """Another producer takes the worker's transactional id (init_transactions bumps the
    epoch and fences the worker's producer). The worker's next transaction fails, its abort
    too; it starts again in place with new clients, without exiting, and redoes what was not
    committed."""
    log = tmp_path / "worker.log"
    settings = settings_for(services, run_id)
    create_topics(settings)
    env = {**eos_env(settings), "MODSTREAM_SINK_TIMEOUT_SECONDS": str(SINK_TIMEOUT_S)}

    def send(start: int, n: int) -> None:
        producer = make_producer(settings)
        for event in events(run_id, n, start):
            key = event["post_id"].encode()
            producer.send(settings.input_topic, key=key, value=to_bytes(event))
        producer.flush()
        producer.close()

    send(0, 100)
    worker = start_worker(settings, log, **env)
    try:
        wait_for(lambda: committed_total(settings) >= 100, 180, "the first posts committed")
        intruder = make_producer(settings, transactional_id=env["MODSTREAM_TRANSACTIONAL_ID"])
        intruder.init_transactions()
        intruder.close()
        fenced_at = time.monotonic()
        send(100, 100)
        wait_for(lambda: committed_total(settings) >= 200, 120, "every offset committed")
        recovered_s = time.monotonic() - fenced_at
        # At once: nothing waits out MODSTREAM_SINK_TIMEOUT_SECONDS on the fenced producer.
        assert recovered_s < SINK_TIMEOUT_S, log.read_text()[-3000:]
        assert worker.poll() is None, log.read_text()[-3000:]
        assert "starting again in place" in log.read_text(), log.read_text()[-3000:]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()

    committed = read_topic(settings, settings.output_topic, 200, isolation_level="read_committed")
    seen = Counter(json.loads(r.value)["post_id"] for r in committed)
    assert set(seen) == {f"{run_id}-{i}" for i in range(200)}
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:5]
    print(f"exactly-once fenced: 200 posts once each, every offset committed {recovered_s:.1f}s")
