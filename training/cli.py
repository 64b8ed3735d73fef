"""Arguments and entry points of ``modstream train`` and ``modstream evaluate``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from models import DEFAULT_ARTIFACT_DIR
from training.data import Example, TaskData, read_examples, task_data

if TYPE_CHECKING:
    from training.train import TrainConfig, TrainResult

log = logging.getLogger(__name__)

KNOWN_LABELS = {
    "sentiment": ("negative", "neutral", "positive"),
    "misinformation": ("real", "fake"),
}
# Folders of --data-dir that feed each task (those present are used), and the source name
# given to rows of a folder whose files carry no ``source`` column.
TASK_FOLDERS = {
    "sentiment": ("sentiment",),
    "misinformation": ("misinformation", "misinformation_general"),
}
FOLDER_SOURCES = {"sentiment": "semeval-sentiment", "misinformation": "constraint-covid"}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT_DIR, help="artifact directory")
    p.add_argument("--mode", choices=["frozen", "lora", "full"], default="frozen")
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
    p.add_argument(
        "--rescore",
        type=Path,
        default=None,
        help="train nothing: take this full fine-tuned artifact's weights (trained on another "
        "machine, e.g. a GPU) and calibrate, choose the policy and report on this machine "
        "from --data-dir into --out",
    )
    p.add_argument("--dropout", type=float, default=0.1, help="dropout of the heads")
    ft = p.add_argument_group("fine-tuning (--mode lora or full)")
    ft.add_argument(
        "--encoder-lr",
        type=float,
        default=None,
        help="learning rate of the encoder (default: 5e-4 LoRA, 5e-5 full)",
    )
    ft.add_argument("--lora-r", type=int, default=16)
    ft.add_argument("--lora-alpha", type=int, default=32)
    ft.add_argument(
        "--max-train-per-task",
        type=int,
        default=None,
        help="stratified subsample of each task's training split (CPU budgets)",
    )
    ft.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="save resumable checkpoints here after every epoch",
    )
    ft.add_argument(
        "--per-source-epoch",
        type=int,
        default=None,
        help="each epoch draws at most this many training examples from each source group "
        "(a fresh draw every epoch), so no single data set dominates a task",
    )
    ft.add_argument(
        "--balance-sources",
        action="store_true",
        help="with --per-source-epoch: draw a smaller source group up to it too (all of it, "
        "then random repeats), so every group weighs the same in each epoch",
    )
    ft.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="end after this many epochs, keeping the learning-rate schedule of --epochs "
        "(a CPU budget; the schedule's last stretch is skipped, not compressed)",
    )
    ft.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    ft.add_argument(
        "--select",
        choices=["best", "last", "average"],
        default="best",
        help="export the epoch with the best mean validation metric, the final one, or the "
        "mean weights of the last --average-last epochs (no choice made on validation)",
    )
    ft.add_argument("--average-last", type=int, default=2, help="epochs --select average uses")
    ft.add_argument(
        "--precision",
        choices=["auto", "fp32"],
        default="auto",
        help="auto: bf16 autocast where the device has it natively (CUDA, or a CPU with AMX "
        "or AVX-512 BF16), else fp32; fp32: never autocast",
    )


def load_tasks(args: argparse.Namespace) -> list[TaskData]:
    if args.task:
        if not (len(args.task) == len(args.train) == len(args.val)):
            raise SystemExit("give one --train and one --val per --task")
        specs = [
            (task, [train], [val])
            for task, train, val in zip(args.task, args.train, args.val, strict=True)
        ]
    else:
        specs = []
        for task, folders in TASK_FOLDERS.items():
            present = [args.data_dir / f for f in folders if (args.data_dir / f).is_dir()]
            if not present:
                raise SystemExit(f"{args.data_dir} has no folder for task {task} ({folders})")
            specs.append(
                (task, [d / "train.jsonl" for d in present], [d / "val.jsonl" for d in present])
            )

    def read(paths: list[Path]) -> list[Example]:
        return [
            e
            for p in paths
            for e in read_examples(
                p, args.text_col, args.label_col, FOLDER_SOURCES.get(p.parent.name)
            )
        ]

    return [
        task_data(task, read(train), read(val), KNOWN_LABELS.get(task))
        for task, train, val in specs
    ]


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
        dropout=args.dropout,
    )
    tasks = load_tasks(args)
    if args.rescore is not None:
        from training.export import rescore_artifact

        try:
            version = rescore_artifact(args.rescore, args.out, tasks)
        except ValueError as exc:
            raise SystemExit(f"modstream train --rescore: {exc}") from None
        print(f"wrote {args.out} (version {version}) from the weights of {args.rescore}")
        return 0
    if cfg.mode == "frozen":
        result = train_frozen(tasks, cfg)
        version = export_artifact(args.out, tasks, result, cfg)
    else:
        version, result = _finetune(args, cfg, tasks)
    metrics = json.loads((args.out / "metrics.json").read_text())["validation"]
    for task, report in metrics.items():
        r = report["overall"]
        print(
            f"{task}: accuracy {r['accuracy']:.3f} macro-F1 {r['macro_f1']:.3f} "
            f"macro recall {r['macro_recall']:.3f} ECE {r['ece']:.3f}"
        )
    print(f"wrote {args.out} (version {version}) in {result.seconds:.0f}s")
    return 0


def _finetune(
    args: argparse.Namespace, cfg: TrainConfig, tasks: list[TaskData]
) -> tuple[str, TrainResult]:
    from training.export import export_artifact, half_precision
    from training.finetune import LORA_TARGETS, FinetuneConfig, finetune, lora_tensors

    ft = FinetuneConfig(
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        encoder_lr=args.encoder_lr or (5e-4 if cfg.mode == "lora" else 5e-5),
        max_train_per_task=args.max_train_per_task,
        per_source_epoch=args.per_source_epoch,
        balance_sources=args.balance_sources,
        stop_after=args.stop_after,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        select=args.select,
        average_last=args.average_last,
        precision=args.precision,
    )
    result, model = finetune(tasks, cfg, ft)
    if cfg.mode == "lora":
        lora = {"r": ft.lora_r, "alpha": ft.lora_alpha, "target_modules": list(LORA_TARGETS)}
        extra = {"adapters": lora_tensors(model)}
        return export_artifact(args.out, tasks, result, cfg, extra, lora), result
    extra = {"encoder": half_precision(model.encoder.state_dict())}
    return export_artifact(args.out, tasks, result, cfg, extra), result


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEFAULT_ARTIFACT_DIR, help="artifact directory")
    p.add_argument("--data", type=Path, help="labelled file (.jsonl/.csv/.tsv); needs --task")
    p.add_argument("--task", help="which head the labels of --data belong to")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="instead of --data: every task's val split in this folder (as for training), "
        "reported per source with false alarms on everyday posts, precision at the block "
        "threshold and a TF-IDF baseline trained on the train splits",
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="with --data-dir: skip the TF-IDF baseline"
    )
    p.add_argument("--text-col", default="text")
    p.add_argument("--label-col", default="label")
    p.add_argument(
        "--out",
        type=Path,
        help="write report.json, report.md and PNG plots here "
        "(default: reports/<model version>-<task>/)",
    )


def evaluate_command(args: argparse.Namespace) -> int:
    import sys

    if args.data is None:
        if args.data_dir is None:
            print("modstream evaluate: give --data FILE --task T, or --data-dir", file=sys.stderr)
            return 2
        return evaluate_all_command(args)
    if args.task is None:
        print("modstream evaluate: --data needs --task", file=sys.stderr)
        return 2

    from models.artifact import ArtifactError
    from training.data import DataError
    from training.evaluate import default_out_dir, evaluate_artifact, summary_text

    try:
        examples = read_examples(args.data, args.text_col, args.label_col)
        out = args.out if args.out is not None else default_out_dir(args.model, args.task)
        report = evaluate_artifact(args.model, args.task, examples, out)
    except (DataError, ArtifactError) as exc:
        print(f"modstream evaluate: {exc}", file=sys.stderr)
        return 2
    overall = report["overall"]
    print(
        f"{args.task} on {args.data}: accuracy {overall['accuracy']:.3f} "
        f"macro-F1 {overall['macro_f1']:.3f} macro recall {overall['macro_recall']:.3f} "
        f"ECE {overall['ece']:.3f}"
    )
    print()
    print(summary_text(report))
    print(f"wrote report.json, report.md and plots to {out}")
    return 0


def evaluate_all_command(args: argparse.Namespace) -> int:
    """Every validation split of --data-dir, per source, at the artifact's own policy."""
    from models.runtime import load_predictor
    from training.evaluate import REPORTS_DIR
    from training.model_card import moderation_lines
    from training.validation import validation_reports

    args.task = []
    tasks = load_tasks(args)
    predictor = load_predictor(args.model, precision="fp32")
    report = validation_reports(
        predictor, tasks, policy=predictor.policy, with_baseline=not args.no_baseline
    )
    report["model_version"] = predictor.version
    text = "\n".join(moderation_lines(report))
    print(text)
    out = args.out if args.out is not None else REPORTS_DIR / f"{predictor.version}-all"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(f"# Evaluation of {predictor.version}\n\n{text}\n")
    print(f"wrote report.json and report.md to {out}")
    return 0
