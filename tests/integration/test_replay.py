"""``modstream replay`` as a real process against Kafka and Redis: exactly the window's posts,
no consumer group touched, killed with SIGKILL and resumed to an exact summary; a resume held
to its model and outputs; records written late, records gone to retention, records of aborted
transactions (the last ones with a fake model: seconds each)."""

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
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
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


def start_replay(
    settings: Settings, args: list[str], log: Path, module: str = "worker", **extra: str
) -> subprocess.Popen[bytes]:
    """``python -m MODULE replay --no-progress ARGS`` (``extra``: more MODSTREAM_* variables),
    its stderr appended to ``log``."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", module, "replay", "--no-progress", *args],
            env=child_env(settings, **extra),
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


# --- with a fake model: seconds per replay -------------------------------------------------
FAKE = "tests.integration.fake_model_replay"  # ``--model DIR``: a FakeModel named DIR's name


def fake_replay(
    settings: Settings, args: list[str], log: Path, **extra: str
) -> tuple[int, dict[str, Any] | None]:
    """Run a fake-model replay to its end: its exit code and, on 0, its summary."""
    proc = start_replay(settings, args, log, module=FAKE, **extra)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, json.loads(out) if proc.returncode == 0 else None


def done_in(state_path: Path) -> int:
    """Offsets committed so far according to a replay's resume file (0 before it exists)."""
    if not state_path.exists():
        return 0
    parts = json.loads(state_path.read_text())["partitions"].values()
    return sum(p["next"] - p["start"] for p in parts)


def interrupted_replay(settings: Settings, args: list[str], log: Path, state_path: Path) -> None:
    """A fake-model replay at 10 records a second, stopped by SIGINT after its first commit."""
    proc = start_replay(settings, [*args, "--rate", "10"], log, module=FAKE)
    try:
        wait_for(lambda: done_in(state_path) > 0, 300, "the replay's first commit")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, log.read_text()[-3000:]  # interrupted: resume it


def delete_records(settings: Settings, before: dict[int, int]) -> None:
    """What retention does: the log of each partition starts at ``before[partition]``."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        admin.delete_records(
            {TopicPartition(settings.input_topic, p): o for p, o in before.items()}
        )
    finally:
        admin.close()


def test_a_resume_with_another_model_or_output_is_refused(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=PARTITIONS)
    base = int(time.time() * 1000) - 3_600_000
    posts = events(run_id, 40)
    produce_at(settings, posts, base)
    rid = f"r-{run_id}"
    state_path = tmp_path / "state" / rid / "state.json"
    args = ["--from", str(base), "--replay-id", rid, "--state-dir", str(tmp_path / "state")]
    log = tmp_path / "replay.log"
    model_a = ["--model", str(tmp_path / "model-A")]
    model_b = ["--model", str(tmp_path / "model-B")]
    interrupted_replay(settings, [*args, *model_a], log, state_path)
    done = done_in(state_path)
    assert 0 < done < len(posts)

    code, _ = fake_replay(settings, [*args, *model_b, "--overwrite-live"], log)
    assert code == 2, log.read_text()[-3000:]
    refusal = log.read_text()
    for difference in (
        "model_version: 'model-A' -> 'model-B'",
        f"output_topic: '{settings.output_topic}.replay' -> '{settings.output_topic}'",
        "overwrite_live: False -> True",
    ):
        assert difference in refusal
    assert done_in(state_path) == done
    client = redis.Redis.from_url(services.redis_url)
    assert not {k for k in keys_under(client, "modstream:verdict:") if k.startswith(run_id)}
    assert read_topic(settings, settings.output_topic, 1, timeout=5) == []

    code, summary = fake_replay(settings, [*args, *model_a], log)  # as it was started
    assert code == 0 and summary is not None, log.read_text()[-3000:]
    assert summary["model_version"] == "model-A" and summary["verdicts"] == len(posts)
    replayed = read_topic(settings, f"{settings.output_topic}.replay", len(posts))
    assert {json.loads(r.value)["model_version"] for r in replayed} == {"model-A"}


def test_a_resume_after_retention_replays_what_is_left_and_counts_what_is_gone(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=PARTITIONS)
    base = int(time.time() * 1000) - 3_600_000
    posts = events(run_id, 40)  # 20 per partition, post n at offset n // 2 of partition n % 2
    produce_at(settings, posts, base)
    rid = f"r-{run_id}"
    state_path = tmp_path / "state" / rid / "state.json"
    args = ["--from", str(base), "--replay-id", rid, "--state-dir", str(tmp_path / "state")]
    log = tmp_path / "replay.log"
    interrupted_replay(settings, args, log, state_path)
    saved = {int(p): v["next"] for p, v in json.loads(state_path.read_text())["partitions"].items()}
    lost = sum(max(0, 15 - n) for n in saved.values())
    assert lost > 0
    delete_records(settings, {0: 15, 1: 15})

    # "latest", the live worker's reset policy, used to end such a resume at once.
    code, summary = fake_replay(settings, args, log, MODSTREAM_AUTO_OFFSET_RESET="latest")
    assert code == 0 and summary is not None, log.read_text()[-3000:]
    assert summary["lost_to_retention"] == lost
    assert summary["records"] == len(posts) == summary["verdicts"] + lost
    assert "left the log before they were read" in log.read_text()
    client = redis.Redis.from_url(services.redis_url)
    keys = keys_under(client, f"modstream:verdict:replay:{rid}:")
    assert {e["post_id"] for e in posts[30:]} <= keys  # offsets 15..19: all still there


def test_records_removed_while_a_replay_reads_are_skipped_from_the_log_start(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    from worker.replay import LOST_TO_RETENTION, BoundedConsumer, ReplayState, Tally, plan_spans
    from worker.replay_run import replay_source

    settings = settings_for(services, run_id)
    create_topics(settings, partitions=PARTITIONS)
    base = int(time.time() * 1000) - 3_600_000
    produce_at(settings, events(run_id, 40), base)
    source = replay_source(settings)
    try:
        topic = settings.input_topic
        state = ReplayState("r", topic, base, None, plan_spans(source, topic, base, None))
        consumer = BoundedConsumer(source, state, tmp_path / "state.json", Tally())
        consumer.subscribe(lambda _: None, lambda _: None)
        delete_records(settings, {0: 12, 1: 12})  # after the check at start: during the run
        got: list[tuple[int, int]] = []
        deadline = time.monotonic() + 60
        while not consumer.finished and time.monotonic() < deadline:
            got += [(r.partition, r.offset) for r in consumer.poll(500, 500)]
        assert consumer.finished
        assert sorted(got) == [(p, o) for p in range(PARTITIONS) for o in range(12, 20)]
        consumer.finish()
        assert state.counts[LOST_TO_RETENTION] == 24
    finally:
        source.close()


def test_records_stamped_in_the_window_but_written_late_are_replayed(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=1)
    base = int(time.time() * 1000) - 3_600_000
    stamps = [("a", 0), ("b", 2100), ("late", 1500), ("c", 3000), ("early", 2500), ("d", 1900)]
    producer = make_producer(settings)
    for name, dt in stamps:  # CreateTime out of offset order, as producers' clocks make it
        event = {"post_id": f"{run_id}-{name}", "text": "hello there"}
        producer.send(
            settings.input_topic, value=json.dumps(event).encode(), timestamp_ms=base + dt
        )
    producer.flush()
    producer.close()
    rid = f"r-{run_id}"
    args = ["--from", str(base), "--to", str(base + 2000), "--replay-id", rid]
    code, summary = fake_replay(settings, [*args, "--state-dir", str(tmp_path)], tmp_path / "log")
    assert code == 0 and summary is not None, (tmp_path / "log").read_text()[-3000:]
    client = redis.Redis.from_url(services.redis_url)
    keys = keys_under(client, f"modstream:verdict:replay:{rid}:")
    assert keys == {f"{run_id}-{name}" for name in ("a", "late", "d")}
    assert summary["verdicts"] == 3 and summary["out_of_window"] == 3  # b, c, early
    assert summary["lateness_seconds"] == 60.0


def test_a_replay_reads_only_committed_transactions(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=1)
    base = int(time.time() * 1000) - 60_000
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, transactional_id=f"input-{run_id}"
    )
    producer.init_transactions()

    def transaction(names: list[str]) -> None:
        producer.begin_transaction()
        for n, name in enumerate(names):
            event = json.dumps({"post_id": f"{run_id}-{name}", "text": "hello there"}).encode()
            producer.send(settings.input_topic, value=event, timestamp_ms=base + n)
        producer.flush()

    transaction(["ok0", "ok1", "ok2"])
    producer.commit_transaction()
    transaction(["aborted0", "aborted1"])
    producer.abort_transaction()
    transaction(["open0", "open1"])  # still open while the replay runs
    try:
        rid = f"r-{run_id}"
        args = ["--from", str(base), "--replay-id", rid, "--state-dir", str(tmp_path)]
        code, summary = fake_replay(settings, args, tmp_path / "log")
    finally:
        producer.abort_transaction()
        producer.close()
    assert code == 0 and summary is not None, (tmp_path / "log").read_text()[-3000:]
    client = redis.Redis.from_url(services.redis_url)
    keys = keys_under(client, f"modstream:verdict:replay:{rid}:")
    assert keys == {f"{run_id}-ok{n}" for n in range(3)}
    assert summary["verdicts"] == 3
    # The span ends at the open transaction (the last stable offset): the replay ended.
    assert summary["partitions"]["0"]["end"] == 7  # 3 + marker, 2 aborted + marker
