"""LoRA adapters merged into the encoder's weights at load time, so inference pays nothing
for them. Plain torch on a state dict: serving does not need peft, only training does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from models.artifact import ArtifactError

_PREFIX = "base_model.model."


def merge_lora(
    state: Mapping[str, torch.Tensor], adapters: Mapping[str, torch.Tensor], lora: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], int]:
    """``state`` (an encoder's weights by name) with W + (alpha / r) * B @ A for every
    adapted linear layer, and how many were adapted; ``state`` itself is left alone."""
    try:
        scale = float(lora["alpha"]) / float(lora["r"])
    except (KeyError, TypeError, ZeroDivisionError) as exc:
        raise ArtifactError(f"config.json: lora needs 'r' and 'alpha' ({exc!r})") from None
    merged = dict(state)
    count = 0
    for key, a in adapters.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removeprefix(_PREFIX).removesuffix(".lora_A.weight") + ".weight"
        b = adapters.get(key.replace(".lora_A.", ".lora_B."))
        weight = state.get(name)
        if b is None or weight is None or weight.shape != (b.shape[0], a.shape[1]):
            raise ArtifactError(f"adapter {key} does not match a linear layer of the encoder")
        merged[name] = weight + scale * (b.to(weight.dtype) @ a.to(weight.dtype))
        count += 1
    if count == 0:
        raise ArtifactError("the artifact's adapters hold no LoRA weights")
    return merged, count
