"""Arguments and entry points of ``modstream train`` and ``modstream evaluate``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from models import DEFAULT_ARTIFACT_DIR
from training.data import TaskData, read_examples, task_data

log = logging.getLogger(__name__)

KNOWN_LABELS = {
    "sentiment": ("negative", "neutral", "positive"),
    "misinformation": ("real", "fake"),
}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT_DIR, help="artifact directory")
    p.add_argument("--mode", choices=["frozen"], default="frozen")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("../shared/data"),
        help="folder with <task>/train.jsonl and <task>/val.jsonl (used when --task is not given)",
    )
    p.add_argument("--task", action="append", default=[], help="task name (repeat per task)")
    p.add_argument(
        "--train", action="append", type=Path, default=[], help="training file per --task"
    )
    p.add_argument(
        "--val", action="append", type=Path, default=[], help="validation file per --task"
    )
    p.add_argument("--text-col", default="text")
    p.add_argument("--label-col", default="label")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--head-hidden", type=int, default=256)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--seed", type=int, default=13)


def load_tasks(args: argparse.Namespace) -> list[TaskData]:
    if args.task:
        if not (len(args.task) == len(args.train) == len(args.val)):
            raise SystemExit("give one --train and one --val per --task")
        specs = list(zip(args.task, args.train, args.val, strict=True))
    else:
        specs = [
            (task, args.data_dir / task / "train.jsonl", args.data_dir / task / "val.jsonl")
            for task in KNOWN_LABELS
        ]
    tasks = []
    for task, train, val in specs:
        tasks.append(
            task_data(
                task,
                read_examples(train, args.text_col, args.label_col),
                read_examples(val, args.text_col, args.label_col),
                KNOWN_LABELS.get(task),
            )
        )
    return tasks


def train_command(args: argparse.Namespace) -> int:
    from training.export import export_artifact
    from training.train import TrainConfig, train_frozen

    cfg = TrainConfig(
        mode=args.mode,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        head_hidden=args.head_hidden,
        max_length=args.max_length,
        patience=args.patience,
        seed=args.seed,
    )
    if cfg.mode != "frozen":
        raise SystemExit(f"mode {cfg.mode!r} is not available yet; use --mode frozen")
    tasks = load_tasks(args)
    result = train_frozen(tasks, cfg)
    version = export_artifact(args.out, tasks, result, cfg)
    metrics = json.loads((args.out / "metrics.json").read_text())["validation"]
    for task, r in metrics.items():
        print(
            f"{task}: accuracy {r['accuracy']:.3f} macro-F1 {r['macro_f1']:.3f} "
            f"macro recall {r['macro_recall']:.3f} ECE {r['ece']:.3f}"
        )
    print(f"wrote {args.out} (version {version}) in {result.seconds:.0f}s")
    return 0


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEFAULT_ARTIFACT_DIR, help="artifact directory")
    p.add_argument("--data", type=Path, required=True, help="labelled file (.jsonl/.csv/.tsv)")
    p.add_argument("--task", required=True, help="which head the labels belong to")
    p.add_argument("--text-col", default="text")
    p.add_argument("--label-col", default="label")
    p.add_argument("--out", type=Path, help="write report.json and report.md here")


def evaluate_command(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_artifact

    report = evaluate_artifact(
        args.model, args.task, read_examples(args.data, args.text_col, args.label_col), args.out
    )
    overall = report["overall"]
    print(
        f"{args.task} on {args.data}: accuracy {overall['accuracy']:.3f} "
        f"macro-F1 {overall['macro_f1']:.3f} macro recall {overall['macro_recall']:.3f} "
        f"ECE {overall['ece']:.3f}"
    )
    return 0
