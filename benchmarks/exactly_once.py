"""The throughput cost of exactly-once: the worker from a backlog in each mode, same posts,
same run, alternating (at-least-once, exactly-once, at-least-once, ...) so a machine that
slows down mid-run does not favour one mode.

    source .stack/env && .venv/bin/python benchmarks/exactly_once.py --posts 1000 --rounds 2

Prints posts/s per mode and the ratio; exactly-once pays for its checkpoint barrier (the
pipeline empties once per MODSTREAM_COMMIT_INTERVAL_MS) and the transaction round trips.
"""

from __future__ import annotations

import argparse
import os
import statistics
import uuid

from throughput import load_texts  # benchmarks/ is on the path
from worker_phases import bench_settings, from_backlog

from models import DEFAULT_ARTIFACT_DIR
from models.runtime import load_predictor
from worker.config import Settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=Settings.model_fields["batch_max_size"].default)
    p.add_argument(
        "--max-pending",
        type=int,
        default=500,
        help="MODSTREAM_MAX_PENDING_RECORDS for both modes: it bounds a transaction, and the "
        "timing (first commit to last) needs more than one",
    )
    p.add_argument(
        "--commit-interval-ms",
        type=int,
        default=Settings.model_fields["commit_interval_ms"].default,
    )
    args = p.parse_args()
    env = {k: os.environ[k] for k in ("MODSTREAM_KAFKA_BOOTSTRAP_SERVERS", "MODSTREAM_REDIS_URL")}
    texts, source = load_texts(args.posts)
    model = load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu")
    print(
        f"{source}; commit interval {args.commit_interval_ms} ms, "
        f"max pending {args.max_pending} records"
    )
    rates: dict[str, list[float]] = {"at-least-once": [], "exactly-once": []}
    for _ in range(args.rounds):
        for mode in rates:
            extra: dict[str, object] = {"max_pending_records": args.max_pending}
            if mode == "exactly-once":
                extra |= {
                    "processing_guarantee": mode,
                    "transactional_id": f"bench-{uuid.uuid4().hex[:8]}",
                    "commit_interval_ms": args.commit_interval_ms,
                }
            run = from_backlog(model, texts, bench_settings(env, args.batch, **extra))
            rates[mode].append(run.rate)
            print(f"{mode:<14} {run.rate:7.1f} posts/s")
    alo = statistics.median(rates["at-least-once"])
    eos = statistics.median(rates["exactly-once"])
    print(
        f"median: at-least-once {alo:.1f} posts/s, exactly-once {eos:.1f} posts/s, "
        f"ratio {eos / alo:.2f} (cost {1 - eos / alo:.0%})"
    )


if __name__ == "__main__":
    main()
