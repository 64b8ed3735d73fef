"""Temperature scaling and policy thresholds, both fitted on validation data."""

from __future__ import annotations

import numpy as np
import torch


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T minimising validation NLL of softmax(logits / T)."""
    logits = logits.detach().clone()  # may come from inference mode; autograd needs a plain copy
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)
    loss_fn = torch.nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss: torch.Tensor = loss_fn(logits / log_t.exp(), targets)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def threshold_for_precision(scores: np.ndarray, positive: np.ndarray, precision: float) -> float:
    """The lowest score threshold whose precision on ``positive`` reaches ``precision``
    (1.0, i.e. never, if none does). Choosing the lowest keeps recall as high as possible."""
    order = np.argsort(-scores)
    tp = np.cumsum(positive[order])
    prec = tp / np.arange(1, len(scores) + 1)
    ok = np.nonzero(prec >= precision)[0]
    if len(ok) == 0:
        return 1.0
    # The largest prefix that still meets the target, i.e. the lowest threshold.
    return float(scores[order][ok.max()])


def threshold_for_recall(scores: np.ndarray, positive: np.ndarray, recall: float) -> float:
    """The highest threshold that still catches ``recall`` of the positives."""
    pos_scores = np.sort(scores[positive.astype(bool)])[::-1]
    if len(pos_scores) == 0:
        return 0.5
    k = int(np.ceil(recall * len(pos_scores))) - 1
    return float(pos_scores[max(0, k)])
