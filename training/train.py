"""Training of the multi-task classifier.

Each example trains the head its label belongs to, so the tasks may come from different
data sets. Frozen mode (the default) trains the heads on cached encoder vectors: minutes
on a CPU. Class-weighted loss, a fixed seed, early stopping on the validation metric.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from models.classifier import MultiTaskHeads
from training.data import TaskData
from training.embed import embed_texts
from training.metrics import classification_report, primary_metric

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    mode: Literal["frozen", "full"] = "frozen"
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    head_hidden: int = 256
    dropout: float = 0.1
    max_length: int = 128
    patience: int = 5
    seed: int = 13
    block_precision: float = 0.95
    review_recall: float = 0.95
    review_negative_precision: float = 0.8


@dataclass
class TrainResult:
    heads: MultiTaskHeads
    val_logits: dict[str, torch.Tensor]
    val_targets: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(targets: torch.Tensor, n_labels: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1, so rare classes count as much."""
    counts = torch.bincount(targets, minlength=n_labels).float().clamp(min=1)
    weights = counts.sum() / (n_labels * counts)
    return weights / weights.mean()


def _targets(data: TaskData, split: str) -> torch.Tensor:
    index = {label: i for i, label in enumerate(data.labels)}
    return torch.tensor([index[e.label] for e in getattr(data, split)], dtype=torch.long)


def train_frozen(
    tasks: Sequence[TaskData],
    cfg: TrainConfig,
    vectors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> TrainResult:
    """Train the heads on frozen encoder vectors (computed and cached if not given)."""
    seed_everything(cfg.seed)
    started = time.perf_counter()
    if vectors is None:
        vectors = {
            t.task: {
                split: embed_texts([e.text for e in getattr(t, split)], cfg.max_length)
                for split in ("train", "val")
            }
            for t in tasks
        }
    dim = next(iter(vectors.values()))["train"].shape[1]
    heads = MultiTaskHeads(
        dim, cfg.head_hidden, {t.task: t.labels for t in tasks}, dropout=cfg.dropout
    )
    targets = {t.task: {s: _targets(t, s) for s in ("train", "val")} for t in tasks}
    losses = {
        t.task: nn.CrossEntropyLoss(weight=class_weights(targets[t.task]["train"], len(t.labels)))
        for t in tasks
    }
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    best_score, best_state, best_logits, stale = -1.0, None, {}, 0
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        heads.train()
        # Interleave the tasks' minibatches in a random order: every example trains its head.
        batches = []
        for t in tasks:
            perm = torch.randperm(len(targets[t.task]["train"]), generator=gen)
            batches += [
                (t.task, perm[i : i + cfg.batch_size]) for i in range(0, len(perm), cfg.batch_size)
            ]
        order = torch.randperm(len(batches), generator=gen).tolist()
        total = 0.0
        for i in order:
            task, idx = batches[i]
            logits = heads.heads[task](vectors[task]["train"][idx])
            loss = losses[task](logits, targets[task]["train"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss)
        heads.eval()
        with torch.inference_mode():
            val_logits = {t.task: heads.heads[t.task](vectors[t.task]["val"]) for t in tasks}
        scores = {
            t.task: primary_metric(
                t.task,
                classification_report(
                    targets[t.task]["val"].numpy(),
                    torch.softmax(val_logits[t.task], -1).numpy(),
                    t.labels,
                ),
            )
            for t in tasks
        }
        mean_score = float(np.mean(list(scores.values())))
        history.append({"epoch": epoch + 1, "train_loss": total / max(1, len(order)), **scores})
        log.info("epoch %d loss %.4f val %s", epoch + 1, total / max(1, len(order)), scores)
        if mean_score > best_score:
            best_score, stale = mean_score, 0
            best_state = {k: v.clone() for k, v in heads.state_dict().items()}
            best_logits = {k: v.clone() for k, v in val_logits.items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    assert best_state is not None
    heads.load_state_dict(best_state)
    return TrainResult(
        heads,
        best_logits,
        {t: targets[t]["val"] for t in targets},
        history,
        time.perf_counter() - started,
    )
