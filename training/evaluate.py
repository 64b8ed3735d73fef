"""Evaluation of an artifact on labelled data, overall and by slice."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data import DataError, Example
from training.metrics import classification_report

SLICES: dict[str, Callable[[str], bool]] = {
    "short (<60 chars)": lambda t: len(t) < 60,
    "medium (60-139 chars)": lambda t: 60 <= len(t) < 140,
    "long (140+ chars)": lambda t: len(t) >= 140,
    "with links": lambda t: bool(re.search(r"https?://|www\.", t, re.IGNORECASE)),
    "with mentions": lambda t: bool(re.search(r"(?<!\w)@\w", t)),
    "with hashtags": lambda t: bool(re.search(r"(?<!\w)#\w", t)),
}


def report_by_slice(
    texts: Sequence[str], y: np.ndarray, probs: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {"overall": classification_report(y, probs, labels), "slices": {}}
    for name, member in SLICES.items():
        mask = np.array([member(t) for t in texts], dtype=bool)
        if mask.any():
            out["slices"][name] = classification_report(y[mask], probs[mask], labels)
    return out


def evaluate_artifact(
    model_dir: Path,
    task: str,
    examples: Sequence[Example],
    out_dir: Path | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    from models.runtime import load_predictor

    predictor = load_predictor(model_dir, precision="fp32")
    if task not in predictor.labels:
        raise DataError(f"the model has no {task!r} head (it has {sorted(predictor.labels)})")
    labels = list(predictor.labels[task])
    unknown = {e.label for e in examples} - set(labels)
    if unknown:
        raise DataError(f"labels {sorted(unknown)} are not among the head's {labels}")
    texts = [e.text for e in examples]
    rows = []
    for i in range(0, len(texts), batch_size):
        for scores in predictor.predict(texts[i : i + batch_size]):
            rows.append([scores[task][label] for label in labels])
    probs = np.array(rows)
    y = np.array([labels.index(e.label) for e in examples])
    report = report_by_slice(texts, y, probs, labels)
    report["model_version"] = predictor.version
    report["task"] = task
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out_dir / "report.md").write_text(markdown_report(report, labels))
    return report


def markdown_report(report: dict[str, Any], labels: Sequence[str]) -> str:
    lines = [f"# Evaluation of {report['model_version']} on {report['task']}", ""]
    lines += [
        "| slice | n | accuracy | macro-F1 | macro recall | ECE |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("overall", report["overall"]), *report["slices"].items()]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
            f"{r['macro_recall']:.3f} | {r['ece']:.3f} |"
        )
    lines += [
        "",
        "## Per class (overall)",
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        c = report["overall"]["per_class"][label]
        lines.append(
            f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} "
            f"| {c['support']} |"
        )
    lines += [
        "",
        "## Confusion matrix (rows: true, columns: predicted)",
        "",
        "| | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for label, row in zip(labels, report["overall"]["confusion_matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
