"""From a training result to a shipped artifact: calibrate, choose the policy, report.

1. fit a temperature per head on validation logits;
2. write the weights and config;
3. load the artifact as the worker does and score every validation post (windows included);
4. choose the policy on a stream-like validation mix (training.moderation), report per
   source beside a TF-IDF baseline, and write config, metrics and model card again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from models.artifact import ArtifactConfig, save_artifact
from models.base import MISINFORMATION
from models.encoder import BASE_ENCODER, encoder_sha256
from training.calibrate import fit_temperature
from training.data import TaskData
from training.evaluate import report_by_slice
from training.model_card import model_card
from training.train import TrainConfig, TrainResult
from training.validation import PolicyTargets, validation_reports


def export_artifact(
    out_dir: Path,
    tasks: Sequence[TaskData],
    result: TrainResult,
    cfg: TrainConfig,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    lora: dict[str, Any] | None = None,
    with_baseline: bool = True,
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
    texts = {t.task: [e.text for e in t.val] for t in tasks}
    by_slice = {
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
        policy={},
        lora=lora,
        training=training_facts(tasks, result, cfg),
    )
    tensors = {"heads": result.heads.state_dict(), **(extra_tensors or {})}
    save_artifact(out_dir, config, tensors)
    reports = stream_reports(out_dir, tasks, cfg, with_baseline)
    if reports:
        config = config.model_copy(update={"policy": reports["policy"]})
    metrics = {"validation": by_slice, "moderation": reports, "history": result.history}
    card = model_card(config, by_slice, reports, tasks)
    return save_artifact(out_dir, config, tensors, metrics, card)


def stream_reports(
    out_dir: Path, tasks: Sequence[TaskData], cfg: TrainConfig, with_baseline: bool
) -> dict[str, Any]:
    """Score validation through the serving path; empty without a misinformation head."""
    if MISINFORMATION not in {t.task for t in tasks}:
        return {}
    from models.runtime import load_predictor

    predictor = load_predictor(out_dir, precision="fp32")
    targets = PolicyTargets(
        cfg.block_precision, cfg.review_precision, cfg.review_negative_precision
    )
    return validation_reports(predictor, tasks, targets, with_baseline=with_baseline)


def training_facts(
    tasks: Sequence[TaskData], result: TrainResult, cfg: TrainConfig
) -> dict[str, Any]:
    return {
        "seed": cfg.seed,
        "epochs_run": len(result.history),
        "seconds": round(result.seconds, 1),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_examples": {t.task: len(t.train) for t in tasks},
        "train_sources": {t.task: dict(sorted(t.source_counts().items())) for t in tasks},
        "hardware": "cuda" if torch.cuda.is_available() else "cpu",
    }
