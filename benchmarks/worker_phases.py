"""The worker's phases of the benchmark: from a backlog, and open loop at a fixed rate.

Each phase uses its own topics and consumer group on the local stack (set up as the
integration tests do, modstream_dev/stack.py), runs the real worker
(``worker.app.build_worker``) on a thread of this process, and reads the verdicts back
from the output topic.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from kafka import KafkaConsumer
from prometheus_client import REGISTRY

from models.artifact import artifact_version, read_config
from models.base import Classifier, Encoded, Scores
from models.bert import BertEncoder, BertShape
from models.classifier import MultiTaskClassifier, MultiTaskHeads
from models.encoder import encoder_dir, serving_tokenizer
from models.runtime import Predictor
from modstream_dev.stack import child_env, create_topics, run_settings, wait_for
from worker.app import build_worker
from worker.config import Settings
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
    cpu_seconds: float = 0.0  # this process's CPU over the timed window (the worker's threads)

    @property
    def rate(self) -> float:
        return self.posts / self.seconds

    @property
    def cpu_us_per_post(self) -> float:
        return self.cpu_seconds / self.posts * 1e6

    def quantile_ms(self, q: float) -> float | None:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else None
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q * 100) - 1]


def bench_settings(env: dict[str, str], batch: int, **overrides: Any) -> Settings:
    """A phase's own topics, group and Redis keys (expiring after 10 minutes)."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    return run_settings(
        env["MODSTREAM_KAFKA_BOOTSTRAP_SERVERS"],
        env["MODSTREAM_REDIS_URL"],
        run,
        **{
            "batch_max_size": batch,
            "redis_key_prefix": f"modstream:bench:{run}:",
            "redis_ttl_seconds": 600,
            **overrides,
        },
    )


def backlog_events(texts: list[str], run: str) -> list[dict[str, object]]:
    """No ``created_at``: the event time is the record's timestamp, set when it is sent."""
    return [{"post_id": f"{run}-{i}", "text": t} for i, t in enumerate(texts)]


def wait(predicate: Callable[[], bool], what: str, every_s: float = 0.1) -> None:
    wait_for(predicate, LIVENESS_S, what, every_s)


class Counters:
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
            wait(lambda: bool(worker.assigned), "the partitions to be assigned")
            yield worker
        finally:
            worker.request_stop()
            thread.join(60)


def from_backlog(model: Classifier, texts: list[str], settings: Settings) -> WorkerRun:
    """Every post is in Kafka before the worker starts: its best sustained rate. Timed from
    the first commit (connections made, first batch done) to the last. ``settings``: a
    phase's own (bench_settings); its input topic keeps the backlog for the replay phase."""
    create_topics(settings)
    produce(settings, backlog_events(texts, settings.group_id))
    with _running(settings, model) as worker:
        wait(lambda: _done(worker) > 0, "the first commit", 0.005)
        counters = Counters()
        first = _done(worker)
        cpu_before, started = _cpu_seconds(), time.perf_counter()
        wait(lambda: _done(worker) >= len(texts), "every offset", 0.01)
        run = WorkerRun(len(texts) - first, time.perf_counter() - started)
        run.cpu_seconds = _cpu_seconds() - cpu_before
        counters.fill(run)
    assert committed_total(settings) == len(texts)  # the broker agrees
    return run


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def fast_network(directory: Path, like: Predictor) -> Predictor:
    """The artifact at ``directory`` (its tokenizer, labels, temperatures and policy) around
    a BERT of MiniLM's depth but hidden size 32, with random weights: its scores mean
    nothing, and a batch of 32 tweets takes 10-16 ms on one CPU core of this project's
    machines, about what this project's one GPU run made of MiniLM (37 ms a batch of 64).
    The worker with it shows on a CPU what the rest of the worker costs a fast model, the
    regime where the GPU run reached 0.54x its model-only path. Laid out as ``like``: its
    device, calls at once and threads."""
    config = read_config(directory)
    shape = replace(
        BertShape.read(encoder_dir() / "config.json"),
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    network = MultiTaskClassifier(
        BertEncoder(shape), MultiTaskHeads(shape.hidden_size, 16, config.labels)
    ).eval()
    tokenizer, pad_id = serving_tokenizer()
    return Predictor(
        network,
        tokenizer,
        pad_id,
        config,
        f"fast-{artifact_version(directory)}",
        like.device,
        concurrency=like.concurrency,
        threads=like.threads,
    )


class ScoresNothing:
    """The worker's model with the model taken out: posts are tokenised as ``model`` does
    (the batcher needs real token counts), and every post gets the scores ``model`` gave
    one probe text, at once. The worker from a backlog with it runs at the pipeline's own
    ceiling (consumer, tokeniser, batcher, policy, sinks, commits): what a model infinitely
    fast would leave, and each post's CPU besides the model's."""

    def __init__(self, model: Classifier) -> None:
        self._model = model
        self._scores = model.predict(["a probe post"])[0]

    @property
    def concurrency(self) -> int:
        return self._model.concurrency

    @property
    def version(self) -> str:
        return self._model.version

    @property
    def max_length(self) -> int:
        return self._model.max_length

    @property
    def labels(self) -> Mapping[str, Sequence[str]]:
        return self._model.labels

    @property
    def policy(self) -> Mapping[str, float]:
        return self._model.policy

    def padded_shape(self, rows: int, width: int) -> tuple[int, int]:
        return self._model.padded_shape(rows, width)

    def prepare(self, texts: Sequence[str]) -> list[Encoded]:
        return self._model.prepare(texts)

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        return [{task: dict(dist) for task, dist in self._scores.items()} for _ in items]

    def predict(self, texts: Sequence[str]) -> list[Scores]:
        return self.predict_encoded(self.prepare(texts))


def open_loop(
    model: Classifier, texts: list[str], env: dict[str, str], batch: int, rate: float
) -> WorkerRun:
    """Posts arrive at ``rate`` per second whatever the worker does; latency is measured
    from each record's timestamp (when it was sent) to its verdict's (when it was sent).
    A few posts go first to warm the connections up; they are not measured."""
    settings = bench_settings(env, batch)
    create_topics(settings)
    warm = backlog_events(texts[:WARM_UP], "warm")
    with _running(settings, model) as worker:
        produce(settings, warm)
        wait(lambda: _done(worker) >= len(warm), "the warm-up posts")
        counters = Counters()
        started = time.perf_counter()
        _produce_elsewhere(settings, backlog_events(texts, settings.group_id), rate)
        wait(lambda: _done(worker) >= len(warm) + len(texts), "every offset")
        run = WorkerRun(len(texts), time.perf_counter() - started)
        counters.fill(run)
    assert committed_total(settings) == len(warm) + len(texts)  # the broker agrees
    latencies = _latencies_ms(settings, len(warm) + len(texts))
    run.latencies_ms = sorted(
        ms for post_id, ms in latencies.items() if not post_id.startswith("warm-")
    )
    return run


def _produce_elsewhere(settings: Settings, events: list[dict[str, object]], rate: float) -> None:
    """Send ``events`` at ``rate`` from another process (``modstream produce``), as a real
    upstream would: a producer on a thread of this process would share the worker's GIL,
    and the latency measured would be the harness's."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
        fh.writelines(json.dumps(e) + "\n" for e in events)
    try:
        cmd = [sys.executable, "-m", "worker", "produce", "--file", fh.name, "--rate", str(rate)]
        subprocess.run(cmd, env=child_env(settings), check=True, capture_output=True)
    finally:
        os.unlink(fh.name)


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


def worker_process_rss_mib(
    texts: list[str], env: dict[str, str], batch: int, device: str = "auto"
) -> dict[str, float]:
    """Resident memory of a real ``modstream run`` process (its own model on ``device``,
    nothing of this harness) after it has worked through ``texts`` from a backlog: its peak
    (``peak``), and at the end the part of it that is anonymous memory (``anon``: the
    process's own) and the part that is file-backed pages (``file``: mapped libraries and
    files, which other processes share and the kernel may drop)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    settings = bench_settings(env, batch, device=device)
    create_topics(settings)
    produce(settings, backlog_events(texts, settings.group_id))
    child = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        env=child_env(settings, MODSTREAM_BATCH_MAX_SIZE=str(batch), MODSTREAM_DEVICE=device),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait(lambda: committed_total(settings) >= len(texts), "the worker process", 1.0)
        status = Path(f"/proc/{child.pid}/status").read_text()
        kib = status_kib(status)
        cuda_kib = cuda_build_pages_kib(Path(f"/proc/{child.pid}/smaps").read_text())
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            print("warning: the worker process did not exit within 120 s of SIGTERM")
    finally:
        if child.poll() is None:
            child.kill()
    return {
        "peak": kib["VmHWM"] / 1024,
        "anon": kib["RssAnon"] / 1024,
        "file": kib["RssFile"] / 1024,
        "cuda_build_files": cuda_kib / 1024,
    }


def status_kib(status: str) -> dict[str, int]:
    """The kB fields of a /proc/PID/status text, in KiB."""
    return {x.split(":")[0]: int(x.split()[1]) for x in status.splitlines() if "kB" in x}


def import_torch_rss_mib() -> dict[str, float]:
    """Resident memory of a process that only imports torch (``rss``, ``anon``, ``file``):
    the floor under any worker's, most of it torch's libraries and what their loading
    allocates (the CUDA build's on a CPU included)."""
    probe = "import torch; print(open('/proc/self/status').read())"
    status = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    kib = status_kib(status)
    return {
        "rss": kib["VmRSS"] / 1024,
        "anon": kib["RssAnon"] / 1024,
        "file": kib["RssFile"] / 1024,
    }


# Files of torch's CUDA build that its CPU build does not have (the Dockerfile's default
# image installs the CPU build): the nvidia-* wheels, torch's CUDA libraries, triton.
CUDA_BUILD_FILE = re.compile(r"/site-packages/(nvidia|triton)/|/torch/lib/lib\w*cuda\w*\.so")


def cuda_build_pages_kib(smaps: str) -> int:
    """Resident KiB of file mappings that belong to torch's CUDA build only."""
    total, counting = 0, False
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:  # a mapping's first line
            counting = len(head) == 6 and bool(CUDA_BUILD_FILE.search(head[5]))
        elif counting and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total
