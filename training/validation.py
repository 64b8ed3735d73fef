"""Score the validation splits through the serving path and build every validation report.

Used by training (to choose the policy and write ``metrics.json`` and the model card) and by
``modstream evaluate --data-dir`` (the same tables for any artifact). Posts are scored by
:class:`models.runtime.Predictor`, exactly as the worker scores them, long-post windows
included. Validation posts of the everyday tasks (sentiment: ordinary tweets that make no
claim) are also scored by the misinformation head as everyday posts: a second, independent
check of false alarms beside the everyday rows of the misinformation data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import MISINFORMATION, SENTIMENT
from training.baseline import baseline_probs, fit_baseline
from training.calibrate import threshold_for_precision
from training.data import Example, TaskData, source_group
from training.metrics import classification_report
from training.moderation import EVERYDAY, fake_thresholds, misinformation_report, stream_weights

if TYPE_CHECKING:
    from models.base import Classifier

EVERYDAY_TASKS = (SENTIMENT,)


@dataclass(frozen=True, slots=True)
class PolicyTargets:
    block_precision: float = 0.95  # stream precision of fake needed to block
    review_precision: float = 0.5  # stream precision of fake needed to send to review
    review_negative_precision: float = 0.8  # precision of negative needed to review


def misinformation_examples(tasks: Sequence[TaskData]) -> list[Example]:
    """The misinformation validation posts plus the everyday tasks' posts, labelled real."""
    by_name = {t.task: t for t in tasks}
    out = list(by_name[MISINFORMATION].val) if MISINFORMATION in by_name else []
    for name in EVERYDAY_TASKS:
        if name in by_name:
            out += [Example(e.text, "real", f"{EVERYDAY}-{name}") for e in by_name[name].val]
    return out


def score(model: Classifier, texts: Sequence[str], batch_size: int = 64) -> list[dict[str, Any]]:
    """Every head's scores for every text, in input order (batched by length for speed)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[dict[str, Any]] = [{}] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        for i, scores in zip(idx, model.predict([texts[i] for i in idx]), strict=True):
            out[i] = scores
    return out


def column(scores: Sequence[Mapping[str, Any]], task: str, labels: Sequence[str]) -> np.ndarray:
    return np.array([[s[task][label] for label in labels] for s in scores], dtype=np.float64)


def choose_policy(
    sentiment: tuple[np.ndarray, np.ndarray, Sequence[str]] | None,
    misinformation: tuple[Sequence[Example], np.ndarray],
    targets: PolicyTargets,
) -> dict[str, float]:
    """Thresholds on the stream mix (fake) and on sentiment validation (negative)."""
    examples, p_fake = misinformation
    is_fake = np.array([e.label == "fake" for e in examples], dtype=np.float64)
    weights = stream_weights([source_group(e.source) for e in examples])
    block, review = fake_thresholds(
        p_fake, is_fake, weights, targets.block_precision, targets.review_precision
    )
    policy = {"block_fake": block, "review_fake": review}
    if sentiment is not None:
        y, probs, labels = sentiment
        neg = list(labels).index("negative")
        policy["review_negative"] = round(
            threshold_for_precision(
                probs[:, neg], (y == neg).astype(int), targets.review_negative_precision
            ),
            6,
        )
    return policy


def sentiment_summary(y: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    r = classification_report(y, probs, labels)
    return {"n": r["n"], "macro_recall": r["macro_recall"], "macro_f1": r["macro_f1"]}


def validation_reports(
    model: Classifier,
    tasks: Sequence[TaskData],
    targets: PolicyTargets | None = None,
    policy: Mapping[str, float] | None = None,
    with_baseline: bool = True,
) -> dict[str, Any]:
    """Score, choose the policy (unless one is given), and report model and baseline."""
    targets = targets or PolicyTargets()
    by_name = {t.task: t for t in tasks}
    mis = misinformation_examples(tasks)
    texts = [e.text for e in mis]
    sent_task = by_name.get(SENTIMENT)
    if sent_task is not None:
        texts += [e.text for e in sent_task.val]
    scores = score(model, texts)
    fake_col = list(model.labels[MISINFORMATION]).index("fake")
    p_fake = column(scores[: len(mis)], MISINFORMATION, model.labels[MISINFORMATION])[:, fake_col]
    sentiment = None
    if sent_task is not None:
        labels = list(sent_task.labels)
        y = np.array([labels.index(e.label) for e in sent_task.val])
        sentiment = (y, column(scores[len(mis) :], SENTIMENT, labels), labels)
    if policy is None:
        policy = choose_policy(sentiment, (mis, p_fake), targets)
    chosen = dict(policy)
    is_fake = np.array([e.label == "fake" for e in mis], dtype=np.float64)
    sources = [e.source for e in mis]
    out: dict[str, Any] = {
        "policy": chosen,
        "misinformation": misinformation_report(sources, is_fake, p_fake, chosen),
    }
    if sentiment is not None:
        out["sentiment"] = sentiment_summary(*sentiment)
    if with_baseline:
        out["baseline"] = baseline_reports(tasks, mis, sentiment, targets)
    return out


def baseline_reports(
    tasks: Sequence[TaskData],
    mis: Sequence[Example],
    sentiment: tuple[np.ndarray, np.ndarray, Sequence[str]] | None,
    targets: PolicyTargets,
) -> dict[str, Any]:
    """The TF-IDF baseline on the same posts, with thresholds chosen the same way."""
    by_name = {t.task: t for t in tasks}
    out: dict[str, Any] = {"model": "tfidf-1-2gram + logistic regression (class-balanced)"}
    if MISINFORMATION in by_name:
        pipe = fit_baseline(by_name[MISINFORMATION])
        p_fake = baseline_probs(pipe, [e.text for e in mis], ["real", "fake"])[:, 1]
        policy = choose_policy(None, (mis, p_fake), targets)
        is_fake = np.array([e.label == "fake" for e in mis], dtype=np.float64)
        out["misinformation"] = misinformation_report(
            [e.source for e in mis], is_fake, p_fake, policy
        )
    if sentiment is not None and SENTIMENT in by_name:
        y, _, labels = sentiment
        pipe = fit_baseline(by_name[SENTIMENT])
        probs = baseline_probs(pipe, [e.text for e in by_name[SENTIMENT].val], labels)
        out["sentiment"] = sentiment_summary(y, probs, labels)
    return out
