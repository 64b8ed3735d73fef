"""LoRA adapters merged into the encoder's weights at load time, so inference pays nothing
for them. Plain torch: serving does not need peft, only training does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from models.artifact import ArtifactError

_PREFIX = "base_model.model."


def merge_lora(
    encoder: nn.Module, adapters: Mapping[str, torch.Tensor], lora: dict[str, Any]
) -> int:
    """W <- W + (alpha / r) * B @ A for every adapted Linear layer; returns how many."""
    try:
        scale = float(lora["alpha"]) / float(lora["r"])
    except (KeyError, TypeError, ZeroDivisionError) as exc:
        raise ArtifactError(f"config.json: lora needs 'r' and 'alpha' ({exc!r})") from None
    modules = dict(encoder.named_modules())
    merged = 0
    for key, a in adapters.items():
        if not key.endswith(".lora_A.weight"):
            continue
        path = key.removeprefix(_PREFIX).removesuffix(".lora_A.weight")
        b = adapters.get(key.replace(".lora_A.", ".lora_B."))
        layer = modules.get(path)
        if b is None or not isinstance(layer, nn.Linear):
            raise ArtifactError(f"adapter {key} does not match a Linear layer of the encoder")
        with torch.no_grad():
            layer.weight += scale * (b.to(layer.weight.dtype) @ a.to(layer.weight.dtype))
        merged += 1
    if merged == 0:
        raise ArtifactError("the artifact's adapters hold no LoRA weights")
    return merged
