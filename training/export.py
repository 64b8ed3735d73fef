"""From a training result to a shipped artifact: calibrate, choose the policy, report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.artifact import ArtifactConfig, save_artifact
from models.encoder import BASE_ENCODER, encoder_sha256
from training.calibrate import fit_temperature, threshold_for_precision, threshold_for_recall
from training.data import TaskData
from training.evaluate import report_by_slice
from training.train import TrainConfig, TrainResult


def choose_policy(
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    labels: Mapping[str, Sequence[str]],
    cfg: TrainConfig,
) -> dict[str, float]:
    """Block where P(fake) is precise enough; review where recall of fake or confidence in
    negative sentiment calls for a human look."""
    fake = list(labels["misinformation"]).index("fake")
    p_fake = probs["misinformation"][:, fake]
    is_fake = (targets["misinformation"] == fake).astype(int)
    # Never block below even odds, even where validation precision would allow it: posts
    # unlike the validation data (other topics) land there, and review is the safe side.
    block = max(0.5, threshold_for_precision(p_fake, is_fake, cfg.block_precision))
    review = min(block, threshold_for_recall(p_fake, is_fake, cfg.review_recall))
    policy = {"block_fake": round(block, 6), "review_fake": round(review, 6)}
    if "sentiment" in probs and "negative" in labels["sentiment"]:
        neg = list(labels["sentiment"]).index("negative")
        p_neg = probs["sentiment"][:, neg]
        is_neg = (targets["sentiment"] == neg).astype(int)
        policy["review_negative"] = round(
            threshold_for_precision(p_neg, is_neg, cfg.review_negative_precision), 6
        )
    return policy


def export_artifact(
    out_dir: Path,
    tasks: Sequence[TaskData],
    result: TrainResult,
    cfg: TrainConfig,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    lora: dict[str, Any] | None = None,
) -> str:
    labels = {t.task: list(t.labels) for t in tasks}
    temperatures = {
        task: fit_temperature(result.val_logits[task], result.val_targets[task]) for task in labels
    }
    probs = {
        task: torch.softmax(result.val_logits[task] / temperatures[task], -1).numpy()
        for task in labels
    }
    targets = {task: result.val_targets[task].numpy() for task in labels}
    policy = choose_policy(probs, targets, labels, cfg)
    texts = {t.task: [e.text for e in t.val] for t in tasks}
    reports = {
        task: report_by_slice(texts[task], targets[task], probs[task], labels[task])
        for task in labels
    }
    config = ArtifactConfig(
        base_encoder=BASE_ENCODER,
        base_encoder_sha256=encoder_sha256(),
        mode=cfg.mode,
        labels=labels,
        head_hidden=cfg.head_hidden,
        max_length=cfg.max_length,
        temperatures={k: round(v, 6) for k, v in temperatures.items()},
        policy=policy,
        lora=lora,
        training={
            "seed": cfg.seed,
            "epochs_run": len(result.history),
            "seconds": round(result.seconds, 1),
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "train_examples": {t.task: len(t.train) for t in tasks},
            "hardware": "cuda" if torch.cuda.is_available() else "cpu",
        },
    )
    tensors = {"heads": result.heads.state_dict(), **(extra_tensors or {})}
    metrics = {"validation": reports, "history": result.history}
    return save_artifact(out_dir, config, tensors, metrics, model_card(config, reports, tasks))


def model_card(config: ArtifactConfig, reports: dict[str, Any], tasks: Sequence[TaskData]) -> str:
    lines = [
        "# modstream classifier",
        "",
        f"Base encoder: `{config.base_encoder}` "
        f"(weights sha256 `{config.base_encoder_sha256[:16]}…`),"
        f" mode `{config.mode}`, max length {config.max_length} tokens.",
        "",
        "## Intended use",
        "Scoring short social-media posts (English) for sentiment (negative/neutral/positive) and",
        "for COVID-19-era health misinformation (real/fake), to route posts to allow, human",
        "review or block. Not for other languages, long documents, or as the sole basis of",
        "account-level sanctions: the misinformation head knows one topic and one period.",
        "",
        "## Data",
    ]
    for t in tasks:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(t.counts().items()))
        lines.append(
            f"- {t.task}: {len(t.train)} training examples ({counts}); {len(t.val)} validation."
        )
    lines += [
        "",
        "## Validation metrics (calibrated), overall and by slice",
        "",
        "| task | slice | n | accuracy | macro-F1 | macro recall | F1 of fake | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, report in reports.items():
        for name, r in [("overall", report["overall"]), *report["slices"].items()]:
            fake = r["per_class"].get("fake", {}).get("f1")
            lines.append(
                f"| {task} | {name} | {r['n']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
                f"{r['macro_recall']:.3f} | {'' if fake is None else f'{fake:.3f}'} | "
                f"{r['ece']:.3f} |"
            )
    lines += [
        "",
        f"Temperatures: {config.temperatures}. Policy thresholds: {config.policy}.",
        "",
        "## Limits",
        "Sentiment test data is known to hold more negative posts than training data.",
        "The misinformation head learned from COVID-19 posts of 2020 alone, where the real",
        "posts read like news and the fake ones like chatter: everyday posts on other topics",
        "often get a high P(fake). Gate the block action to that domain, or retrain with",
        "off-topic negatives, before using it on a general stream. Scores drift as language",
        "does: re-evaluate on fresh labelled samples before trusting thresholds.",
        "",
    ]
    return "\n".join(lines)
