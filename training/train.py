"""Training of the multi-task classifier.

Each example trains the head its label belongs to, so the tasks may come from different
data sets. Frozen mode (the default) trains the heads on cached encoder vectors: minutes
on a CPU. Class-weighted loss, a fixed seed, early stopping on the validation metric.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
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
    mode: Literal["frozen", "lora", "full"] = "frozen"
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    head_hidden: int = 256
    dropout: float = 0.1
    max_length: int = 128
    patience: int = 5
    seed: int = 13
    block_precision: float = 0.95  # stream precision of fake needed to block
    review_precision: float = 0.5  # stream precision of fake needed to send to review
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
    # Each head keeps its own best epoch: the tasks peak at different times.
    best: dict[str, tuple[float, dict[str, torch.Tensor], torch.Tensor]] = {}
    stale = {t.task: 0 for t in tasks}
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        loss = _train_epoch(heads, vectors, targets, losses, opt, cfg.batch_size, gen)
        val_logits, scores = _validate(heads, vectors, targets, tasks)
        history.append({"epoch": epoch + 1, "train_loss": loss, **scores})
        log.info("epoch %d loss %.4f val %s", epoch + 1, loss, scores)
        for task, score in scores.items():
            if task not in best or score > best[task][0]:
                state = {k: v.clone() for k, v in heads.heads[task].state_dict().items()}
                best[task] = (score, state, val_logits[task].clone())
                stale[task] = 0
            else:
                stale[task] += 1
        if min(stale.values()) >= cfg.patience:
            break
    for task, (_, state, _) in best.items():
        heads.heads[task].load_state_dict(state)
    best_logits = {task: logits for task, (_, _, logits) in best.items()}
    return TrainResult(
        heads,
        best_logits,
        {t: targets[t]["val"] for t in targets},
        history,
        time.perf_counter() - started,
    )


def _train_epoch(
    heads: MultiTaskHeads,
    vectors: dict[str, dict[str, torch.Tensor]],
    targets: dict[str, dict[str, torch.Tensor]],
    losses: Mapping[str, nn.Module],
    opt: torch.optim.Optimizer,
    batch_size: int,
    gen: torch.Generator,
) -> float:
    """One pass over every task's training set, the tasks' minibatches interleaved at random
    so that each example trains the head its label belongs to. Returns the mean loss."""
    heads.train()
    batches = []
    for task, split in targets.items():
        perm = torch.randperm(len(split["train"]), generator=gen)
        batches += [(task, perm[i : i + batch_size]) for i in range(0, len(perm), batch_size)]
    total = 0.0
    for i in torch.randperm(len(batches), generator=gen).tolist():
        task, idx = batches[i]
        loss = losses[task](
            heads.heads[task](vectors[task]["train"][idx]), targets[task]["train"][idx]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.detach().item()
    return total / max(1, len(batches))


def _validate(
    heads: MultiTaskHeads,
    vectors: dict[str, dict[str, torch.Tensor]],
    targets: dict[str, dict[str, torch.Tensor]],
    tasks: Sequence[TaskData],
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    heads.eval()
    with torch.inference_mode():
        logits = {t.task: heads.heads[t.task](vectors[t.task]["val"]) for t in tasks}
    scores = {
        t.task: primary_metric(
            t.task,
            classification_report(
                targets[t.task]["val"].numpy(), torch.softmax(logits[t.task], -1).numpy(), t.labels
            ),
        )
        for t in tasks
    }
    return logits, scores
