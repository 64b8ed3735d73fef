"""How long a model hot-swap pauses scoring, measured on the local stack.

    source .stack/env && .venv/bin/python benchmarks/hotswap_pause.py [--posts 3000] [--batch 32]

The real worker (``build_worker`` with a :class:`worker.hotswap.ModelReloader`, as
``modstream run`` wires them) runs on a thread of this process and works through a backlog,
so the model stage is never idle and the time between two batches is one batch time. After
a few batches a reload of a copy of the shipped artifact with another version is asked for
(what SIGHUP does): it loads on the reloader's thread while scoring goes on, and the model
stage switches between two batches. From the verdicts on the output topic it reports the
median time between batches before the swap, the time between the last batch the old model
scored and the first the new one scored (the issue's target: at most one batch time beyond
the load time), the load time, and the scoring rate before, during and after the load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from worker_phases import _create_topics, _done, _wait, bench_settings  # benchmarks/ on the path

from models import DEFAULT_ARTIFACT_DIR
from models.runtime import load_predictor
from worker.app import build_worker, make_pipeline, make_policy
from worker.hotswap import Candidate, ModelReloader, artifact_loader
from worker.produce import produce, synthetic_events


def artifact_copy(dest: Path) -> Path:
    """The shipped artifact with a note in its manifest: same weights, another version."""
    shutil.copytree(DEFAULT_ARTIFACT_DIR, dest)
    config = json.loads((dest / "config.json").read_text())
    config["training"]["hotswap_bench"] = dest.name
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return dest


def read_verdicts(bootstrap: list[str], topic: str, expected: int) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(json.loads(r.value) for r in records)
    finally:
        consumer.close()
    return out


def figures(
    verdicts: list[dict[str, Any]], old: str, new: str, asked: float, offered: float
) -> dict[str, float]:
    """Batches are told apart by their ``processed_at`` (one clock reading per batch)."""
    batches: dict[float, tuple[str, int]] = {}
    for v in verdicts:
        stamp = datetime.fromisoformat(v["processed_at"]).timestamp()
        version, n = batches.get(stamp, (v["model_version"], 0))
        batches[stamp] = (version, n + 1)
    stamps = sorted(batches)
    before = [b - a for a, b in itertools.pairwise(stamps) if b < asked]
    last_old = max(s for s in stamps if batches[s][0] == old)
    first_new = min(s for s in stamps if batches[s][0] == new)

    def rate(lo: float, hi: float) -> float:
        return sum(n for s, (_, n) in batches.items() if lo <= s < hi) / (hi - lo)

    return {
        "batch_time_s (median gap between batches, before)": statistics.median(before),
        "gap_at_swap_s (last old batch -> first new batch)": first_new - last_old,
        "load_s (load + probe + policy, reloader thread)": offered - asked,
        "posts_per_s before the load": rate(stamps[0], asked),
        "posts_per_s during the load": rate(asked, offered),
        "posts_per_s after the swap": rate(first_new, stamps[-1]),
        "batches_old": sum(1 for v, _ in batches.values() if v == old),
        "batches_new": sum(1 for v, _ in batches.values() if v == new),
    }


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--posts", type=int, default=3000)
    args.add_argument("--batch", type=int, default=32)
    opts = args.parse_args()
    env = {k: v for k, v in os.environ.items() if k.startswith("MODSTREAM_")}
    if "MODSTREAM_KAFKA_BOOTSTRAP_SERVERS" not in env:
        sys.exit("source .stack/env first (make stack-up)")
    settings = bench_settings(env, opts.batch, device="cpu")
    _create_topics(settings)
    produce(settings, synthetic_events(), count=opts.posts)
    model = load_predictor(settings.model_dir, "cpu", threads=settings.torch_threads)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        candidate_dir = artifact_copy(Path(tmp) / "candidate")
        pipeline = make_pipeline(settings, model)
        worker = build_worker(settings, model, stack, pipeline=pipeline)
        reloader = ModelReloader(
            candidate_dir,
            pipeline.swap,
            model.version,
            artifact_loader(settings),
            lambda m: make_policy(settings, m),
            interval_s=0,
        )
        thread = threading.Thread(target=worker.run, name="bench-worker")
        thread.start()
        try:
            _wait(lambda: _done(worker) >= opts.posts // 10, "the first batches", 0.01)
            asked = time.time()
            outcome = reloader.check(forced=True)  # on this thread, not the model stage's
            offered = time.time()
            if not isinstance(outcome, Candidate):
                sys.exit(f"the candidate was not offered: {outcome}")
            new = outcome.model.version
            _wait(lambda: _done(worker) >= opts.posts, "every offset", 0.05)
        finally:
            worker.request_stop()
            thread.join(60)
    verdicts = read_verdicts(settings.bootstrap_servers, settings.output_topic, opts.posts)
    if sorted(v["post_id"] for v in verdicts) != sorted({v["post_id"] for v in verdicts}):
        sys.exit("a post was scored twice")
    result = figures(verdicts, model.version, new, asked, offered)
    print(f"hot-swap pause, {opts.posts} posts from a backlog, batches of {opts.batch}:")
    for name, value in result.items():
        print(f"  {name:<55} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
