"""Serving: device choice, mixed precision, and the :class:`Predictor` the worker calls."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch

from models.artifact import ArtifactError, artifact_version, load_tensors, read_config
from models.base import Scores
from models.classifier import MultiTaskClassifier, MultiTaskHeads
from models.encoder import encoder_dir, encoder_sha256, load_encoder, load_tokenizer
from models.preprocess import normalise

log = logging.getLogger(__name__)


def choose_device(preference: Literal["auto", "cpu", "cuda"] = "auto") -> torch.device:
    """CUDA when asked for or present (auto), else the CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """fp16 on CUDA (bf16 where the GPU has it); bf16 on CPUs with native bf16; else none."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


class Predictor:
    """A loaded artifact ready to score texts: satisfies :class:`models.base.Classifier`."""

    def __init__(
        self,
        model: MultiTaskClassifier,
        tokenizer: object,
        labels: Mapping[str, Sequence[str]],
        temperatures: Mapping[str, float],
        policy: Mapping[str, float],
        max_length: int,
        version: str,
        device: torch.device,
        precision: Literal["auto", "fp32"] = "auto",
    ) -> None:
        self._model = model.to(device).eval()
        self._tokenizer = tokenizer
        self._labels = {t: list(names) for t, names in labels.items()}
        self._temperatures = dict(temperatures)
        self._policy = dict(policy)
        self._max_length = max_length
        self._version = version
        self.device = device
        self.amp_dtype = autocast_dtype(device) if precision == "auto" else None

    @property
    def version(self) -> str:
        return self._version

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def labels(self) -> Mapping[str, Sequence[str]]:
        return self._labels

    @property
    def policy(self) -> Mapping[str, float]:
        return self._policy

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Normalise, truncate to ``max_length`` and pad to the batch's longest text."""
        enc = self._tokenizer(  # type: ignore[operator]
            [normalise(t) for t in texts],
            padding="longest",
            truncation=True,
            max_length=self._max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type != "cuda":
            return batch
        # Pinned host memory lets the copy run asynchronously with the host's next work.
        return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def logits(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Calibrated logits (divided by each head's temperature), on the CPU, as float32."""
        batch = self._to_device(self.tokenize(texts))
        with torch.inference_mode(), self._autocast():
            raw = self._model(**batch)
        return {t: (v.float() / self._temperatures.get(t, 1.0)).cpu() for t, v in raw.items()}

    def predict(self, texts: Sequence[str]) -> list[Scores]:
        if not texts:
            return []
        probs = {t: torch.softmax(v, dim=-1).tolist() for t, v in self.logits(texts).items()}
        return [
            {task: dict(zip(self._labels[task], probs[task][i], strict=True)) for task in probs}
            for i in range(len(texts))
        ]


def load_predictor(
    directory: Path,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    precision: Literal["auto", "fp32"] = "auto",
) -> Predictor:
    """Load an artifact; refuse it if it was built on other encoder weights."""
    config = read_config(directory)
    base = encoder_dir()
    actual = encoder_sha256(base)
    if config.base_encoder_sha256 != actual:
        raise ArtifactError(
            f"{directory} was trained on encoder weights {config.base_encoder_sha256[:12]}, "
            f"but the installed {config.base_encoder} has {actual[:12]}"
        )
    tensors = load_tensors(directory, config)
    encoder = load_encoder(base)
    if config.mode == "lora":
        from models.adapters import merge_lora

        merge_lora(encoder, tensors["adapters"], config.lora or {})
    elif config.mode == "full":
        encoder.load_state_dict(tensors["encoder"])
    heads = MultiTaskHeads(encoder.config.hidden_size, config.head_hidden, config.labels)
    heads.load_state_dict(tensors["heads"])
    model = MultiTaskClassifier(encoder, heads)
    chosen = choose_device(device)
    predictor = Predictor(
        model,
        load_tokenizer(base),
        config.labels,
        config.temperatures,
        config.policy,
        config.max_length,
        artifact_version(directory),
        chosen,
        precision,
    )
    log.info("loaded model %s on %s (autocast %s)", predictor.version, chosen, predictor.amp_dtype)
    return predictor
