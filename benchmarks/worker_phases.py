"""The worker's phases of the benchmark: from a backlog, and open loop at a fixed rate.

Each phase uses its own topics and consumer group on the local stack, runs the real worker
(``worker.app.build_worker``) on a thread of this process, and reads the verdicts back
from the output topic.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from models.base import Classifier
from worker.app import build_worker
from worker.config import Settings, load_settings
from worker.kafka_client import committed_total
from worker.loop import Worker
from worker.metrics import STAGES
from worker.produce import produce

LIVENESS_S = 900.0
WARM_UP = 16  # posts sent before an open-loop phase, not measured


@dataclass
class WorkerRun:
    posts: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    stage_busy: dict[str, float] = field(default_factory=dict)  # share of wall time
    mean_batch: float = 0.0
    mean_padding: float = 0.0

    @property
    def rate(self) -> float:
        return self.posts / self.seconds

    def quantile_ms(self, q: float) -> float | None:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else None
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q * 100) - 1]


def bench_settings(env: dict[str, str], batch: int, **overrides: Any) -> Settings:
    run = f"bench-{uuid.uuid4().hex[:8]}"
    return load_settings(
        kafka_bootstrap_servers=env["MODSTREAM_KAFKA_BOOTSTRAP_SERVERS"],
        redis_url=env["MODSTREAM_REDIS_URL"],
        input_topic=f"{run}.posts",
        output_topic=f"{run}.verdicts",
        dlq_topic=f"{run}.dlq",
        group_id=run,
        metrics_port=0,
        batch_max_size=batch,
        redis_key_prefix=f"modstream:bench:{run}:",
        redis_ttl_seconds=600,
        **overrides,
    )


def _create_topics(settings: Settings, partitions: int = 4) -> None:
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


def _events(texts: list[str], run: str) -> list[dict[str, object]]:
    """No ``created_at``: the event time is the record's timestamp, set when it is sent."""
    return [{"post_id": f"{run}-{i}", "text": t} for i, t in enumerate(texts)]


def _wait(predicate: Any, what: str, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + LIVENESS_S
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark gave up waiting for {what}")
        time.sleep(every_s)


class _Counters:
    """Deltas of the worker's own metrics over one phase."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> dict[str, float]:
        values = {
            f"stage:{s}": REGISTRY.get_sample_value("modstream_stage_seconds_sum", {"stage": s})
            or 0.0
            for s in STAGES
        }
        for name in (
            "modstream_batch_size_sum",
            "modstream_batch_size_count",
            "modstream_batch_padding_ratio_sum",
            "modstream_batch_padding_ratio_count",
        ):
            values[name] = REGISTRY.get_sample_value(name) or 0.0
        return values

    def fill(self, run: WorkerRun) -> None:
        end = self._read()
        d = {k: end[k] - self._start[k] for k in end}
        run.stage_busy = {s: d[f"stage:{s}"] / run.seconds for s in STAGES}
        batches = d["modstream_batch_size_count"]
        run.mean_batch = d["modstream_batch_size_sum"] / batches if batches else 0.0
        padded = d["modstream_batch_padding_ratio_count"]
        run.mean_padding = d["modstream_batch_padding_ratio_sum"] / padded if padded else 0.0


@contextmanager
def _running(settings: Settings, model: Classifier) -> Iterator[Worker]:
    with ExitStack() as stack:
        worker = build_worker(settings, model, stack)
        thread = threading.Thread(target=worker.run, name="bench-worker")
        thread.start()
        try:
            _wait(lambda: bool(worker.assigned), "the partitions to be assigned")
            yield worker
        finally:
            worker.request_stop()
            thread.join(60)


def from_backlog(
    model: Classifier, texts: list[str], env: dict[str, str], batch: int, **overrides: Any
) -> WorkerRun:
    """Every post is in Kafka before the worker starts: its best sustained rate. Timed from
    the first commit (connections made, first batch done) to the last. ``overrides`` are
    settings (e.g. ``processing_guarantee``)."""
    settings = bench_settings(env, batch, **overrides)
    _create_topics(settings)
    produce(settings, _events(texts, settings.group_id))
    with _running(settings, model) as worker:
        _wait(lambda: _done(worker) > 0, "the first commit", 0.005)
        counters = _Counters()
        first = _done(worker)
        started = time.perf_counter()
        _wait(lambda: _done(worker) >= len(texts), "every offset")
        run = WorkerRun(len(texts) - first, time.perf_counter() - started)
        counters.fill(run)
    assert committed_total(settings) == len(texts)  # the broker agrees
    return run


def open_loop(
    model: Classifier, texts: list[str], env: dict[str, str], batch: int, rate: float
) -> WorkerRun:
    """Posts arrive at ``rate`` per second whatever the worker does; latency is measured
    from each record's timestamp (when it was sent) to its verdict's (when it was sent).
    A few posts go first to warm the connections up; they are not measured."""
    settings = bench_settings(env, batch)
    _create_topics(settings)
    warm = _events(texts[:WARM_UP], "warm")
    with _running(settings, model) as worker:
        produce(settings, warm)
        _wait(lambda: _done(worker) >= len(warm), "the warm-up posts")
        counters = _Counters()
        started = time.perf_counter()
        produce(settings, _events(texts, settings.group_id), rate=rate)
        _wait(lambda: _done(worker) >= len(warm) + len(texts), "every offset")
        run = WorkerRun(len(texts), time.perf_counter() - started)
        counters.fill(run)
    assert committed_total(settings) == len(warm) + len(texts)  # the broker agrees
    latencies = _latencies_ms(settings, len(warm) + len(texts))
    run.latencies_ms = sorted(
        ms for post_id, ms in latencies.items() if post_id.startswith("bench")
    )
    return run


def _done(worker: Worker) -> int:
    """Records committed: with offsets from 0, the sum of the committed offsets. Asked from
    the worker in this process: polling the broker would steal CPU from what is measured."""
    return sum(worker.committed().values())


def _latencies_ms(settings: Settings, expected: int) -> dict[str, float]:
    consumer = KafkaConsumer(
        settings.output_topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    out: dict[str, float] = {}
    deadline = time.monotonic() + 60
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    verdict = json.loads(r.value)
                    event_ms = _epoch_ms(verdict["event_time"])
                    out[verdict["post_id"]] = r.timestamp - event_ms  # a redo keeps the last
    finally:
        consumer.close()
    return out


def _epoch_ms(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp() * 1000.0


def worker_process_rss_mib(texts: list[str], env: dict[str, str], batch: int) -> float:
    """Peak resident memory of a real ``modstream run`` process (its own model, nothing of
    this harness) after it has worked through ``texts`` from a backlog."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    settings = bench_settings(env, batch)
    _create_topics(settings)
    produce(settings, _events(texts, settings.group_id))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MODSTREAM_")}
    child_env.update(
        {
            "MODSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "MODSTREAM_REDIS_URL": settings.redis_url.get_secret_value(),
            "MODSTREAM_INPUT_TOPIC": settings.input_topic,
            "MODSTREAM_OUTPUT_TOPIC": settings.output_topic,
            "MODSTREAM_DLQ_TOPIC": settings.dlq_topic,
            "MODSTREAM_GROUP_ID": settings.group_id,
            "MODSTREAM_REDIS_KEY_PREFIX": settings.redis_key_prefix,
            "MODSTREAM_REDIS_TTL_SECONDS": "600",
            "MODSTREAM_BATCH_MAX_SIZE": str(batch),
            "MODSTREAM_METRICS_PORT": "0",
            "MODSTREAM_DEVICE": "cpu",
        }
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: committed_total(settings) >= len(texts), "the worker process", 1.0)
        status = Path(f"/proc/{child.pid}/status").read_text()
        peak_kib = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM:"))
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            print("warning: the worker process did not exit within 120 s of SIGTERM")
    finally:
        if child.poll() is None:
            child.kill()
    return peak_kib / 1024
