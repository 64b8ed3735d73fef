"""Exactly-once mode against the real broker: a worker killed with -9 mid-stream and
started again, and a worker whose producer is fenced; a ``read_committed`` reader of the
output and dead-letter topics sees every post exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.integration.helpers import (
    create_topics,
    end_offsets,
    events,
    read_to_end,
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


def open_transaction(settings: Settings) -> dict[int, int]:
    """Per partition of the output topic, the records past its last stable offset: those of
    a transaction still open (neither committed nor aborted yet)."""
    high = end_offsets(settings, settings.output_topic, "read_uncommitted")
    stable = end_offsets(settings, settings.output_topic, "read_committed")
    return {p: high[p] - stable[p] for p in high if high[p] > stable[p]}


def kill_mid_transaction(
    worker: subprocess.Popen[bytes], settings: Settings, timeout: float = 60.0
) -> int:
    """SIGKILL ``worker`` while a transaction of its holds verdicts on the output topic, and
    return how many. It is frozen (SIGSTOP) while the offsets are read, so a transaction
    seen open cannot commit before the kill; the offsets must also hold still over half a
    second, so a commit it asked for just before (the broker writing its markers) is not
    taken for an open transaction."""
    deadline = time.monotonic() + timeout
    while True:
        worker.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # what it sent before reaches the log
        first = open_transaction(settings)
        time.sleep(0.5)
        if first and open_transaction(settings) == first:
            worker.send_signal(signal.SIGKILL)
            return sum(first.values())
        worker.send_signal(signal.SIGCONT)
        assert time.monotonic() < deadline, "never caught a transaction open with verdicts in it"
        time.sleep(0.1)


def test_kill_9_and_restart_gives_read_committed_readers_each_post_once(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    settings = settings_for(services, run_id)
    create_topics(settings)
    producer = make_producer(settings)
    broken = []
    for i, event in enumerate(events(run_id, POSTS)):
        producer.send(settings.input_topic, key=event["post_id"].encode(), value=to_bytes(event))
        if i % (POSTS // BROKEN) == 0:
            broken.append(producer.send(settings.input_topic, key=b"broken", value=b"{not json"))
    producer.flush()
    producer.close()
    broken_at = {(m.partition, m.offset) for m in (f.get(timeout=60) for f in broken)}
    assert len(broken_at) == BROKEN
    total = POSTS + BROKEN
    client = redis.Redis.from_url(services.redis_url)

    first = start_worker(settings, log, **eos_env(settings))
    try:
        # Killed once at least one transaction committed, with verdicts in an open one.
        wait_for(lambda: committed_total(settings) > 0, 180, "a first committed transaction")
        wait_for(lambda: len(verdict_keys(client, run_id)) >= 100, 120, "verdicts in flight")
        open_at_kill = kill_mid_transaction(first, settings)
        assert first.wait(timeout=30) == -signal.SIGKILL
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

    # Read to the end, not up to a count: a verdict or dead letter written twice must show.
    committed = read_to_end(settings, settings.output_topic, "read_committed")
    seen = Counter(json.loads(r.value)["post_id"] for r in committed)
    assert set(seen) == {f"{run_id}-{i}" for i in range(POSTS)}
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:5]
    letters = read_to_end(settings, settings.dlq_topic, "read_committed")
    sources = Counter(
        (int(h["modstream.source.partition"]), int(h["modstream.source.offset"]))
        for h in (dict(r.headers) for r in letters)
    )
    assert sources == Counter(broken_at), sources
    # Everything the first worker wrote after its last commit was aborted, the open
    # transaction's verdicts at least: a read_uncommitted reader sees those repeats, a
    # read_committed one does not.
    raw = read_to_end(settings, settings.output_topic, "read_uncommitted")
    repeats = len(raw) - POSTS
    assert repeats >= open_at_kill > 0, (repeats, open_at_kill)
    assert len(verdict_keys(client, run_id)) == POSTS
    print(
        f"exactly-once kill -9: posts {POSTS}, read_committed verdicts {len(committed)}, "
        f"duplicates 0, aborted writes seen by read_uncommitted {repeats} "
        f"({open_at_kill} in the transaction open at the kill), "
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
