"""CPU backends against fp32 on the validation sets: speed ratio and metric deltas.

Scores each validation set with every backend: ``fp32`` (torch, no autocast: the
reference), ``bf16`` (torch with bf16 autocast, only where the CPU has native bf16),
``int8`` (torch dynamic int8 quantisation of the linear layers) and ``onnx`` (ONNX Runtime,
if installed). Texts are tokenised once (``prepare``); each batch is then run by every
backend in turn, rotating the order, so a CPU shared with other work slows them alike and
the speed ratios stay comparable within the run. Prints JSON and a Markdown table; a
backend is adoptable when every task's validation metric moves by less than 0.005.

    python benchmarks/backends.py [--limit 1000] [--batch 64] [--backends fp32,bf16,int8,onnx]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import DEFAULT_ARTIFACT_DIR
from models.base import Encoded, Scores
from models.runtime import Predictor, configure_threads, cpu_has_native_bf16, load_predictor
from training.metrics import classification_report, primary_metric

SETS = {  # file under the data directory -> task scored on it
    "sentiment/val.jsonl": "sentiment",
    "misinformation/val.jsonl": "misinformation",
    "misinformation_general/val.jsonl": "misinformation",
}
TOLERANCE = 0.005
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32", "backend": "torch"},
    "bf16": {"precision": "auto", "backend": "torch"},
    "int8": {"precision": "fp32", "backend": "torch-int8"},
    "onnx": {"precision": "fp32", "backend": "onnx"},
}


@dataclass
class Run:
    predictor: Predictor
    seconds: float = 0.0
    rows: int = 0
    scores: dict[str, list[Scores]] = field(default_factory=dict)


def read_set(path: Path, limit: int, seed: int) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if limit and len(rows) > limit:
        rows = random.Random(seed).sample(rows, limit)
    return [r["text"] for r in rows], [r["label"] for r in rows]


def load_variants(names: list[str]) -> dict[str, Run]:
    runs = {}
    for name in names:
        if name == "bf16" and not cpu_has_native_bf16():
            print("skipping bf16: this CPU has no native bf16", file=sys.stderr)
            continue
        try:
            runs[name] = Run(load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", **VARIANTS[name]))
        except RuntimeError as exc:  # onnx without onnxruntime installed
            print(f"skipping {name}: {exc}", file=sys.stderr)
    return runs


def score_set(runs: dict[str, Run], key: str, items: list[Encoded], batch: int) -> None:
    """Every backend on every batch, the order rotating batch by batch."""
    names = list(runs)
    for run in runs.values():
        run.scores[key] = []
    for n, i in enumerate(range(0, len(items), batch)):
        chunk = items[i : i + batch]
        rows = sum(e.rows for e in chunk)
        for name in names[n % len(names) :] + names[: n % len(names)]:
            run = runs[name]
            started = time.perf_counter()
            run.scores[key].extend(run.predictor.predict_encoded(chunk))
            run.seconds += time.perf_counter() - started
            run.rows += rows


def metric(task: str, labels: list[str], gold: list[str], scores: list[Scores]) -> float:
    probs = np.array([[s[task][label] for label in labels] for s in scores])
    y = np.array([labels.index(g) for g in gold])
    return primary_metric(task, classification_report(y, probs, labels))


def compare(
    runs: dict[str, Run], gold: dict[str, list[str]], sizes: dict[str, int]
) -> dict[str, Any]:
    ref = runs["fp32"]
    out: dict[str, Any] = {}
    for name, run in runs.items():
        entry: dict[str, Any] = {
            "seconds": round(run.seconds, 2),
            "rows_per_second": round(run.rows / run.seconds, 1),
            "speed_vs_fp32": round(ref.seconds / run.seconds, 3),
            "sets": {},
        }
        for key, task in SETS.items():
            if key not in gold:
                continue
            labels = list(run.predictor.labels[task])
            got = metric(task, labels, gold[key], run.scores[key])
            base = metric(task, labels, gold[key], ref.scores[key])
            flips = sum(
                max(a[task], key=a[task].__getitem__) != max(b[task], key=b[task].__getitem__)
                for a, b in zip(run.scores[key], ref.scores[key], strict=True)
            )
            max_dp = max(
                abs(a[task][lab] - b[task][lab])
                for a, b in zip(run.scores[key], ref.scores[key], strict=True)
                for lab in labels
            )
            entry["sets"][key] = {
                "n": sizes[key],
                "metric": round(got, 4),
                "delta": round(got - base, 4),
                "labels_changed": flips,
                "max_abs_prob_delta": round(max_dp, 4),
            }
        entry["adoptable"] = all(abs(s["delta"]) < TOLERANCE for s in entry["sets"].values())
        out[name] = entry
    return out


def markdown(results: dict[str, Any]) -> str:
    keys = list(next(iter(results.values()))["sets"])
    head = "| backend | rows/s | speed vs fp32 | " + " | ".join(
        f"{k.split('/')[0]} metric (delta, labels changed)" for k in keys
    )
    lines = [head + " | adoptable |", "|" + " --- |" * (len(keys) + 4)]
    for name, r in results.items():
        cells = [
            f"{s['metric']:.4f} ({s['delta']:+.4f}, {s['labels_changed']})"
            for s in r["sets"].values()
        ]
        lines.append(
            f"| {name} | {r['rows_per_second']} | {r['speed_vs_fp32']:.2f}x | "
            + " | ".join(cells)
            + f" | {'yes' if r['adoptable'] else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--limit", type=int, default=0, help="rows per set (0 = all)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = auto)")
    parser.add_argument("--backends", default="fp32,bf16,int8,onnx")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    names = ["fp32", *[n for n in args.backends.split(",") if n and n != "fp32"]]
    threads = configure_threads(args.threads)
    runs = load_variants(names)
    gold: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for key in SETS:
        path = args.data_dir / key
        if not path.exists():
            print(f"skipping {key}: {path} not found", file=sys.stderr)
            continue
        texts, gold[key] = read_set(path, args.limit, args.seed)
        sizes[key] = len(texts)
        score_set(runs, key, runs["fp32"].predictor.prepare(texts), args.batch)
    results = compare(runs, gold, sizes)
    doc = {
        "threads": threads,
        "batch": args.batch,
        "limit_per_set": args.limit or None,
        "tolerance": TOLERANCE,
        "results": results,
    }
    print(json.dumps(doc, indent=2))
    print()
    print(markdown(results))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
