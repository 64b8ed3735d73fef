"""Classification metrics computed from labels and probabilities (scikit-learn underneath)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_report(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, labels: Sequence[str], n_bins: int = 10
) -> dict[str, Any]:
    """Accuracy, macro-F1, macro recall, per-class P/R/F1, confusion matrix and ECE."""
    y = np.asarray(y_true)
    pred = probs.argmax(axis=1)
    idx = list(range(len(labels)))
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=idx, zero_division=0)
    report: dict[str, Any] = {
        "n": len(y),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "macro_f1": float(np.mean(f)),
        "macro_recall": float(np.mean(r)),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y, pred, labels=idx).tolist(),
        "ece": expected_calibration_error(y, probs, n_bins),
    }
    return report


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins."""
    if len(y_true) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def primary_metric(task: str, report: dict[str, Any]) -> float:
    """The figure model selection optimises: macro recall for sentiment (the task's standard
    metric), F1 of ``fake`` for misinformation, macro-F1 otherwise."""
    if task == "sentiment":
        return float(report["macro_recall"])
    if task == "misinformation" and "fake" in report["per_class"]:
        return float(report["per_class"]["fake"]["f1"])
    return float(report["macro_f1"])


def reliability_bins(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, n_bins: int = 10
) -> list[dict[str, Any]]:
    """Per equal-width confidence bin ``(lower, upper]`` (the bins of
    :func:`expected_calibration_error`): count, mean top-label confidence and accuracy.
    Empty bins have count 0 and ``None`` for confidence and accuracy."""
    y = np.asarray(y_true)
    conf = probs.max(axis=1) if len(y) else np.zeros(0)
    correct = probs.argmax(axis=1) == y if len(y) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins: list[dict[str, Any]] = []
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        count = int(mask.sum())
        bins.append(
            {
                "lower": float(lo),
                "upper": float(hi),
                "count": count,
                "confidence": float(conf[mask].mean()) if count else None,
                "accuracy": float(correct[mask].mean()) if count else None,
            }
        )
    return bins
