"""Frozen-encoder sentence vectors, computed once and cached on disk.

With the encoder frozen, the heads only ever see its pooled output, so computing it once
per text turns head training from hours into seconds. The cache key covers everything the
vectors depend on: encoder weights, preprocessing version, max length and the texts.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from models.encoder import encoder_sha256, load_encoder, load_tokenizer, mean_pool
from models.preprocess import PREPROCESSING_VERSION, normalise

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "modstream" / "embeddings"


def cache_key(texts: Sequence[str], max_length: int) -> str:
    digest = hashlib.sha256()
    digest.update(f"{encoder_sha256()}|{PREPROCESSING_VERSION}|{max_length}|".encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


@torch.inference_mode()
def embed_texts(
    texts: Sequence[str],
    max_length: int = 128,
    batch_size: int = 64,
    device: torch.device | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Pooled encoder vectors, shape (len(texts), hidden), in input order."""
    path = cache_dir() / f"{cache_key(texts, max_length)}.safetensors"
    if use_cache and path.is_file():
        return load_file(path)["vectors"]
    device = device or torch.device("cpu")
    tokenizer = load_tokenizer()
    encoder = load_encoder().to(device).eval()  # type: ignore[arg-type]
    # Sorting by length keeps padding, and so wasted compute, small.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), encoder.config.hidden_size)
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="embed"):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [normalise(texts[i]) for i in idx],
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        hidden = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        out[idx] = mean_pool(hidden.last_hidden_state, enc["attention_mask"]).float().cpu()
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": out.contiguous()}, path)
    return out
