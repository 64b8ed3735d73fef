"""A real ``modstream run`` process hot-swaps its model while posts flow: a deploy flips the
symlink at MODSTREAM_MODEL_DIR to a new artifact, then to a broken one."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import statistics
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from models import DEFAULT_ARTIFACT_DIR
from models.artifact import artifact_version
from tests.integration.helpers import (
    create_topics,
    events,
    free_port,
    metrics_on,
    read_topic,
    scrape,
    settings_for,
    start_worker,
    to_bytes,
    verdict_keys,
    wait_for,
)
from worker.config import Settings
from worker.kafka_client import make_producer

pytestmark = pytest.mark.integration

RATE = 25.0  # posts per second while the swap happens: a steady stream the worker keeps up with
MAX_STREAMED = 1500  # a bound on the posts sent while waiting for the swap


def artifact_copy(dest: Path, note: str) -> Path:
    """The shipped artifact with a note in its manifest: the same weights, another version
    (the version is a hash of config.json)."""
    shutil.copytree(DEFAULT_ARTIFACT_DIR, dest)
    config = json.loads((dest / "config.json").read_text())
    config["training"]["hotswap_test"] = note
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return dest


def flip(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically: a new link renamed over the old one."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    tmp.replace(link)


def sample(port: int, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(scrape(port)):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


class Stream:
    """Sends posts at a steady rate on a thread until stopped."""

    def __init__(self, settings: Settings, run_id: str, start: int) -> None:
        self._producer = make_producer(settings)
        self._topic = settings.input_topic
        self._run_id = run_id
        self.next = start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def send(self, n: int) -> None:
        for event in events(self._run_id, n, start=self.next):
            self._producer.send(self._topic, key=event["post_id"].encode(), value=to_bytes(event))
        self.next += n
        self._producer.flush()

    def _run(self) -> None:
        while not self._stop.wait(1.0 / RATE) and self.next < MAX_STREAMED:
            self.send(1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def close(self) -> None:
        self._producer.close()


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def pause_figures(verdicts: list[dict[str, Any]], old: str, new: str) -> dict[str, float]:
    """How long scoring paused at the swap: the gap between the last batch the old model
    scored and the first the new one scored, against the median gap between batches; and
    each post's wait (record time to scored) under each model. ``verdicts``: the posts
    streamed while the worker was up (the first ones waited for it to start)."""
    scored = sorted({seconds(v["processed_at"]) for v in verdicts})
    gaps = [b - a for a, b in itertools.pairwise(scored)]
    last_old = max(seconds(v["processed_at"]) for v in verdicts if v["model_version"] == old)
    first_new = min(seconds(v["processed_at"]) for v in verdicts if v["model_version"] == new)
    waits = [(v, seconds(v["processed_at"]) - seconds(v["event_time"])) for v in verdicts]
    old_waits = sorted(w for v, w in waits if v["model_version"] == old)
    new_waits = sorted(w for v, w in waits if v["model_version"] == new)
    return {
        "median_gap_between_batches_s": statistics.median(gaps),
        "gap_at_the_swap_s": first_new - last_old,
        "old_model_wait_p50_s": statistics.median(old_waits),
        "old_model_wait_max_s": old_waits[-1],
        "new_model_wait_p50_s": statistics.median(new_waits),
        "new_model_wait_max_s": new_waits[-1],
    }


def memory_mib(pid: int, field: str) -> float:
    """A field of /proc/PID/status (VmRSS, VmHWM: the peak) in MiB; 0 where there is none."""
    status = Path(f"/proc/{pid}/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def records_in(settings: Settings, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def test_the_model_swaps_under_load_and_a_broken_artifact_is_refused(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=2)
    old_dir = artifact_copy(tmp_path / "a", "a")
    new_dir = artifact_copy(tmp_path / "b", "b")
    broken_dir = artifact_copy(tmp_path / "broken", "broken")
    (broken_dir / "heads.safetensors").unlink()
    old, new = artifact_version(old_dir), artifact_version(new_dir)
    assert old != new
    link = tmp_path / "current"
    link.symlink_to(old_dir)

    log = tmp_path / "worker.log"
    port = free_port()
    client = redis.Redis.from_url(services.redis_url)
    stream = Stream(settings, run_id, start=0)
    child = start_worker(
        settings,
        log,
        MODSTREAM_MODEL_DIR=str(link),
        MODSTREAM_MODEL_WATCH_INTERVAL_SECONDS="0.5",
        **metrics_on(port),
    )
    try:
        stream.send(60)
        wait_for(lambda: len(verdict_keys(client, run_id)) >= 60, 180, "the first verdicts")
        assert sample(port, "modstream_model_info", version=old) == 1.0

        peak_before = memory_mib(child.pid, "VmHWM")
        stream.start()  # posts flow while the new artifact loads and takes over
        time.sleep(1.0)
        flip(link, new_dir)
        wait_for(
            lambda: sample(port, "modstream_model_swaps_total", result="ok") == 1.0,
            120,
            "the swap",
        )
        time.sleep(1.0)
        stream.stop()
        sent = stream.next
        peak_after = memory_mib(child.pid, "VmHWM")
        wait_for(lambda: len(verdict_keys(client, run_id)) >= sent, 120, f"{sent} verdicts")
        assert sample(port, "modstream_model_info", version=new) == 1.0

        flip(link, broken_dir)
        wait_for(
            lambda: sample(port, "modstream_model_swaps_total", result="refused") == 1.0,
            60,
            "the refusal",
        )
        stream.send(40)
        wait_for(lambda: len(verdict_keys(client, run_id)) >= sent + 40, 60, "the last verdicts")
        assert sample(port, "modstream_model_info", version=new) == 1.0
        assert sample(port, "modstream_model_swaps_total", result="ok") == 1.0
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        stream.close()
        if child.poll() is None:
            child.kill()

    total = sent + 40
    assert records_in(settings, settings.output_topic) == total  # none scored twice
    verdicts = [json.loads(r.value) for r in read_topic(settings, settings.output_topic, total)]
    counts = Counter(v["post_id"] for v in verdicts)
    assert set(counts) == {f"{run_id}-{i}" for i in range(total)}  # none missing
    assert max(counts.values()) == 1
    by_id = {v["post_id"]: v for v in verdicts}
    assert {by_id[f"{run_id}-{i}"]["model_version"] for i in range(60)} == {old}
    assert {by_id[f"{run_id}-{i}"]["model_version"] for i in range(sent, total)} == {new}
    last_old = max(seconds(v["processed_at"]) for v in verdicts if v["model_version"] == old)
    first_new = min(seconds(v["processed_at"]) for v in verdicts if v["model_version"] == new)
    assert last_old <= first_new  # one switch point: no old verdict after a new one
    text = log.read_text()
    assert f"hot-swap refused: the model at {link} ({broken_dir.resolve()}) does not load" in text
    assert "heads.safetensors is missing" in text
    assert f"{new} keeps serving" in text

    streamed = [by_id[f"{run_id}-{i}"] for i in range(60, sent)]
    figures = pause_figures(streamed, old, new)
    figures["peak_rss_before_mib"], figures["peak_rss_after_mib"] = peak_before, peak_after
    loads = [line for line in text.splitlines() if "loaded and probed in" in line]
    with capsys.disabled():
        print(f"\nhot-swap under {RATE:.0f} posts/s, {total} posts: {loads[0].split(': ', 1)[1]}")
        print("hot-swap pause: " + ", ".join(f"{k}={v:.3f}" for k, v in figures.items()))
