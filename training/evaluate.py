"""Evaluation of an artifact on labelled data, overall and by slice, with plots."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.artifact import artifact_version, read_config
from models.base import MISINFORMATION
from training.data import DataError, Example
from training.metrics import classification_report, reliability_bins
from training.moderation import misinformation_report, misinformation_table

if TYPE_CHECKING:
    from models.runtime import Predictor

SLICES: dict[str, Callable[[str], bool]] = {
    "short (<60 chars)": lambda t: len(t) < 60,
    "medium (60-139 chars)": lambda t: 60 <= len(t) < 140,
    "long (140+ chars)": lambda t: len(t) >= 140,
    "with links": lambda t: bool(re.search(r"https?://|www\.", t, re.IGNORECASE)),
    "with mentions": lambda t: bool(re.search(r"(?<!\w)@\w", t)),
    "with hashtags": lambda t: bool(re.search(r"(?<!\w)#\w", t)),
}

# Where `modstream evaluate` writes when --out is not given (relative to the working directory).
REPORTS_DIR = Path("reports")
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"


def default_out_dir(model_dir: Path, task: str) -> Path:
    """``reports/<model version>-<task>``; raises ArtifactError if ``model_dir`` is no artifact."""
    read_config(model_dir)
    return REPORTS_DIR / f"{artifact_version(model_dir)}-{task}"


def report_by_slice(
    texts: Sequence[str], y: np.ndarray, probs: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Reports overall and per non-empty slice; ``empty_slices`` names the others."""
    out: dict[str, Any] = {
        "overall": classification_report(y, probs, labels),
        "slices": {},
        "empty_slices": [],
    }
    for name, member in SLICES.items():
        mask = np.array([member(t) for t in texts], dtype=bool)
        if mask.any():
            out["slices"][name] = classification_report(y[mask], probs[mask], labels)
        else:
            out["empty_slices"].append(name)
    return out


def head_labels(model_dir: Path, task: str, examples: Sequence[Example]) -> list[str]:
    """The task head's label order, read from the artifact's config before any weights load;
    DataError if there is no such head or the data has labels the head does not know."""
    heads = read_config(model_dir).labels
    if task not in heads:
        raise DataError(f"the model has no {task!r} head (it has {sorted(heads)})")
    labels = list(heads[task])
    if not examples:
        raise DataError(f"task {task}: no examples to evaluate")
    unknown = {e.label for e in examples} - set(labels)
    if unknown:
        row = next(n for n, e in enumerate(examples, 1) if e.label in unknown)
        raise DataError(
            f"task {task}: labels {sorted(unknown)} (first at row {row}) are not among "
            f"the head's labels {labels}"
        )
    return labels


def predict_probs(
    predictor: Predictor, task: str, labels: Sequence[str], texts: Sequence[str], batch_size: int
) -> np.ndarray:
    """One row of probabilities per text, columns in ``labels`` order."""
    rows = []
    for i in range(0, len(texts), batch_size):
        for scores in predictor.predict(texts[i : i + batch_size]):
            rows.append([scores[task][label] for label in labels])
    return np.array(rows, dtype=np.float64)


def evaluate_artifact(
    model_dir: Path,
    task: str,
    examples: Sequence[Example],
    out_dir: Path | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Score ``examples`` with the artifact's ``task`` head; write the report to ``out_dir``
    (report.json, report.md and two PNG plots) when it is given."""
    from models.runtime import load_predictor

    labels = head_labels(model_dir, task, examples)
    predictor = load_predictor(model_dir, precision="fp32")
    texts = [e.text for e in examples]
    probs = predict_probs(predictor, task, labels, texts, batch_size)
    y = np.array([labels.index(e.label) for e in examples])
    report = report_by_slice(texts, y, probs, labels)
    report["model_version"] = predictor.version
    report["task"] = task
    report["labels"] = labels
    report["reliability"] = reliability_bins(y, probs)
    if (
        task == MISINFORMATION
        and "fake" in labels
        and {"block_fake", "review_fake"} <= set(predictor.policy)
    ):
        is_fake = (y == labels.index("fake")).astype(np.float64)
        report["moderation"] = misinformation_report(
            [e.source for e in examples], is_fake, probs[:, labels.index("fake")], predictor.policy
        )
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    overall = report["overall"]
    title = f"{report['task']}, {report['model_version']} (n={overall['n']})"
    plot_confusion_matrix(
        overall["confusion_matrix"], report["labels"], out_dir / CONFUSION_PNG, title
    )
    plot_reliability(report["reliability"], out_dir / RELIABILITY_PNG, title, overall["ece"])
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown_report(report))


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str
) -> None:
    """Heat map of counts, rows true labels, columns predicted labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)
    size = 1.2 + 1.1 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax)
    ticks = list(range(len(labels)))
    ax.set_xticks(ticks, labels=list(labels))
    ax.set_yticks(ticks, labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix\n{title}", fontsize=10)
    dark = counts.max() / 2 if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        colour = "white" if value > dark else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(bins: Sequence[dict[str, Any]], path: Path, title: str, ece: float) -> None:
    """Accuracy per confidence bin against the diagonal, each bar labelled with its count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    filled = [b for b in bins if b["count"]]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.bar(
        [(b["lower"] + b["upper"]) / 2 for b in filled],
        [b["accuracy"] for b in filled],
        width=[b["upper"] - b["lower"] for b in filled],
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.scatter(
        [b["confidence"] for b in filled],
        [b["confidence"] for b in filled],
        color="red",
        zorder=3,
        s=12,
        label="mean confidence",
    )
    for b in filled:
        middle = (b["lower"] + b["upper"]) / 2
        ax.annotate(
            f"n={b['count']}",
            (middle, b["accuracy"]),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence (top-label probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability, ECE {ece:.3f}\n{title}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_report(report: dict[str, Any]) -> str:
    """The whole report: summary tables, per-slice details and links to the two plots."""
    lines = [f"# Evaluation of {report['model_version']} on {report['task']}", ""]
    lines.append(summary_text(report))
    lines += [
        "## Plots",
        "",
        f"![Confusion matrix (overall)]({CONFUSION_PNG})",
        "",
        f"![Reliability diagram (overall)]({RELIABILITY_PNG})",
    ]
    return "\n".join(lines) + "\n"


def summary_text(report: dict[str, Any]) -> str:
    """Markdown tables: headline figures overall and per slice, then per-class figures and
    the confusion matrix overall and for each slice (what the CLI prints)."""
    labels: list[str] = report["labels"]
    lines = headline_table(report)
    if "moderation" in report:
        lines += ["", "## By source, at the model's policy thresholds", ""]
        lines += misinformation_table(report["moderation"])
    if report["empty_slices"]:
        lines += ["", "No posts in: " + ", ".join(report["empty_slices"]) + "."]
    sections = [("Overall", report["overall"])]
    sections += [(f"Slice: {name}", r) for name, r in report["slices"].items()]
    for heading, r in sections:
        lines += ["", f"## {heading} (n={r['n']})", ""]
        lines += [*per_class_table(r, labels), "", *confusion_table(r, labels)]
    return "\n".join(lines) + "\n"


def headline_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| slice | n | accuracy | macro-F1 | macro recall | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in [("overall", report["overall"]), *report["slices"].items()]:
        lines.append(
            f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
            f"{r['macro_recall']:.3f} | {r['ece']:.3f} |"
        )
    return lines


def per_class_table(r: dict[str, Any], labels: Sequence[str]) -> list[str]:
    lines = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label in labels:
        c = r["per_class"][label]
        lines.append(
            f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} "
            f"| {c['support']} |"
        )
    return lines


def confusion_table(r: dict[str, Any], labels: Sequence[str]) -> list[str]:
    lines = [
        "Confusion matrix (rows: true, columns: predicted):",
        "",
        "| | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for label, row in zip(labels, r["confusion_matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return lines
