"""``modstream replay`` as a real process against Kafka and Redis: exactly the window's posts,
no consumer group touched, killed with SIGKILL and resumed to an exact summary."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from tests.integration.helpers import (
    child_env,
    create_topics,
    events,
    read_topic,
    settings_for,
    wait_for,
)
from worker.config import Settings
from worker.kafka_client import make_producer

# The real model loads and scores on the CPU: minutes when the machine is busy.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

PARTITIONS = 2


def start_replay(settings: Settings, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "replay", "--no-progress", *args],
            env=child_env(settings),
            stdout=subprocess.PIPE,
            stderr=err,
        )


def produce_at(settings: Settings, posts: list[dict[str, Any]], start_ms: int) -> None:
    """One post per 10 ms of record time from ``start_ms``, spread over the partitions."""
    producer = make_producer(settings)
    for n, event in enumerate(posts):
        producer.send(
            settings.input_topic,
            key=event["post_id"].encode(),
            value=json.dumps(event).encode(),
            partition=n % PARTITIONS,
            timestamp_ms=start_ms + 10 * n,
        )
    producer.flush()
    producer.close()


def live_group_offsets(settings: Settings) -> dict[int, int | None]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,
    )
    try:
        return {
            p: consumer.committed(TopicPartition(settings.input_topic, p))
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def commit_live_group(settings: Settings, offsets: dict[int, int]) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,
    )
    try:
        consumer.commit(
            {
                TopicPartition(settings.input_topic, p): OffsetAndMetadata(o, "", -1)
                for p, o in offsets.items()
            }
        )
    finally:
        consumer.close()


def groups_named(settings: Settings, run_id: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        return {str(g["group_id"]) for g in admin.list_groups() if run_id in str(g["group_id"])}
    finally:
        admin.close()


def keys_under(client: redis.Redis, prefix: str) -> set[str]:
    return {k.decode()[len(prefix) :] for k in client.scan_iter(match=f"{prefix}*", count=1000)}


def test_replay_of_a_window_is_exact_isolated_and_resumes_after_kill_9(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=PARTITIONS)
    base = int(time.time() * 1000) - 3_600_000
    before, inside, after = events(run_id, 40), events(run_id, 200, 40), events(run_id, 40, 240)
    produce_at(settings, before, base)
    produce_at(settings, inside, base + 100_000)
    produce_at(settings, after, base + 200_000)
    commit_live_group(settings, {0: 7, 1: 9})  # the live worker's progress, to be left alone
    groups = groups_named(settings, run_id)
    assert groups == {settings.group_id}

    rid = f"r-{run_id}"
    args = [
        "--from",
        str(base + 100_000),
        "--to",
        str(base + 100_000 + 10 * len(inside)),
        "--replay-id",
        rid,
        "--state-dir",
        str(tmp_path / "state"),
    ]
    client = redis.Redis.from_url(services.redis_url)
    prefix = f"modstream:verdict:replay:{rid}:"
    log = tmp_path / "replay.log"

    first = start_replay(settings, [*args, "--rate", "40"], log)
    try:
        wait_for(lambda: len(keys_under(client, prefix)) >= 20, 1500, "the first replay verdicts")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    state = json.loads((tmp_path / "state" / rid / "state.json").read_text())
    done = sum(p["next"] - p["start"] for p in state["partitions"].values())
    assert 0 < done < len(inside), "the replay should be mid-way when killed"

    second = start_replay(settings, args, log)
    try:
        out, _ = second.communicate(timeout=1500)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, log.read_text()[-3000:]
    summary = json.loads(out)
    assert summary == json.loads((tmp_path / "state" / rid / "summary.json").read_text())

    # Exactly the window's posts have replay verdicts, each counted once despite the kill.
    window = {e["post_id"] for e in inside}
    assert keys_under(client, prefix) == window
    assert summary["records"] == len(inside) and summary["verdicts"] == len(inside)
    assert sum(summary["actions"].values()) == len(inside)
    assert summary["dead_letters"] == {} and summary["out_of_window"] == 0
    sample = json.loads(client.hget(f"{prefix}{inside[0]['post_id']}", "json") or b"{}")
    assert sample["replay_id"] == rid

    # Nothing written over live verdicts, nothing to the live topic, the live group untouched.
    # (Other tests share this Redis: look only at this run's posts.)
    ours = {k for k in keys_under(client, "modstream:verdict:") if run_id in k}
    assert ours == {f"replay:{rid}:{p}" for p in window}
    assert read_topic(settings, settings.output_topic, 1, timeout=5) == []
    replayed = read_topic(settings, f"{settings.output_topic}.replay", len(inside))
    assert {json.loads(r.value)["post_id"] for r in replayed} == window
    assert live_group_offsets(settings) == {0: 7, 1: 9}
    assert groups_named(settings, run_id) == groups
