"""The multi-task network: one encoder pass, one small head per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from models.encoder import mean_pool


class TaskHead(nn.Module):
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear over the pooled sentence vector."""

    def __init__(self, dim: int, hidden: int, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_labels),
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(pooled)
        return out


class MultiTaskHeads(nn.Module):
    """The task heads alone: what frozen-encoder training learns and what ships."""

    def __init__(
        self, dim: int, hidden: int, labels: Mapping[str, Sequence[str]], dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(
            {task: TaskHead(dim, hidden, len(names), dropout) for task, names in labels.items()}
        )

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {task: head(pooled) for task, head in self.heads.items()}


class MultiTaskClassifier(nn.Module):
    """Encoder + mean pooling + heads. Returns logits per task."""

    def __init__(self, encoder: nn.Module, heads: MultiTaskHeads) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = heads

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        # transformers' BertModel (training) returns an output object; the serving
        # encoder (models.bert) the hidden states themselves.
        hidden = out if isinstance(out, torch.Tensor) else out.last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        logits: dict[str, torch.Tensor] = self.heads(self.embed(input_ids, attention_mask))
        return logits
