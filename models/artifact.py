"""The model artifact: one directory that training writes and serving reads.

    config.json        base encoder name and weights sha256, label maps, max length,
                       preprocessing version, temperatures, policy thresholds, and the
                       sha256 of every weights file
    heads.safetensors  the task heads (and encoder.safetensors for full fine-tuning, or
                       adapters.safetensors for LoRA)
    metrics.json       validation figures          MODEL_CARD.md   what it is for, limits

The version is a hash of config.json, which pins every weights file by its hash, so any
change to the contents changes the version and a tampered file is refused. Weights are
read with safetensors only: nothing here can unpickle.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from models import DEFAULT_ARTIFACT_DIR  # noqa: F401  (re-exported)
from models.encoder import BASE_ENCODER
from models.preprocess import PREPROCESSING_VERSION

FORMAT_VERSION = 1
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# The weights file each mode needs besides heads.safetensors ("frozen" uses the base encoder).
MODE_FILES = {"full": "encoder.safetensors", "lora": "adapters.safetensors"}


class ArtifactError(ValueError):
    """The artifact is missing, malformed, tampered with, or built for another encoder."""


class ArtifactConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = FORMAT_VERSION
    base_encoder: str = BASE_ENCODER
    base_encoder_sha256: str
    mode: Literal["frozen", "lora", "full"] = "frozen"
    labels: dict[str, list[str]]
    head_hidden: int = Field(ge=1)
    max_length: int = Field(ge=8, le=512)
    preprocessing_version: int = PREPROCESSING_VERSION
    temperatures: dict[str, float]
    policy: dict[str, float]
    lora: dict[str, Any] | None = Field(None, description="r, alpha, target modules")
    files: dict[str, str] = Field(default_factory=dict, description="weights file -> sha256")
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_temperatures(self) -> ArtifactConfig:
        """One positive temperature per task, or none yet (weights trained elsewhere, which
        ``modstream train --rescore`` calibrates; :meth:`check_calibrated` refuses to serve
        them): a missing one would serve that task uncalibrated (the policy's thresholds
        were fitted on calibrated scores), and a negative one turns every prediction
        around while the scores stay probabilities."""
        if self.temperatures and self.temperatures.keys() != self.labels.keys():
            raise ValueError(
                f"temperatures for {sorted(self.temperatures)}, labels for {sorted(self.labels)}"
            )
        if bad := {t: v for t, v in self.temperatures.items() if not v > 0}:
            raise ValueError(f"temperatures must be positive: {bad}")
        return self

    def check_calibrated(self, directory: Path) -> None:
        """Refuse to serve an artifact without its temperatures."""
        if not self.temperatures:
            raise ArtifactError(
                f"{directory} is not calibrated (no temperatures): "
                "`modstream train --rescore` makes them"
            )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artifact_version(directory: Path) -> str:
    """Content hash: config.json pins the weights by hash, so hashing it covers both."""
    return "ms-" + _sha256(directory / "config.json")[:12]


def save_artifact(
    directory: Path,
    config: ArtifactConfig,
    tensors: dict[str, dict[str, torch.Tensor]],
    metrics: dict[str, Any] | None = None,
    model_card: str | None = None,
) -> str:
    """Write weights (``{"heads": {...}, "adapters": {...}}``) and config; return the version."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for stem, state in tensors.items():
        name = f"{stem}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, directory / name)
        files[name] = _sha256(directory / name)
    final = config.model_copy(update={"files": files})
    (directory / "config.json").write_text(
        json.dumps(final.model_dump(), indent=2, sort_keys=True) + "\n"
    )
    if metrics is not None:
        (directory / "metrics.json").write_text(
            json.dumps(metrics, indent=2, sort_keys=True) + "\n"
        )
    if model_card is not None:
        (directory / "MODEL_CARD.md").write_text(model_card)
    return artifact_version(directory)


def read_config(directory: Path) -> ArtifactConfig:
    return read_config_and_version(directory)[0]


def read_config_and_version(directory: Path) -> tuple[ArtifactConfig, str]:
    """The artifact's config and its version (:func:`artifact_version`), from one reading
    of config.json: read twice, a deploy that replaces the file in between would pair one
    artifact's config with another's version."""
    path = directory / "config.json"
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a model artifact: no config.json")
    data = path.read_bytes()
    try:
        config = ArtifactConfig.model_validate_json(data)
    except ValidationError as exc:
        raise ArtifactError(f"{path} is malformed: {exc}") from None
    if config.format_version != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format {config.format_version}, expected {FORMAT_VERSION}")
    if config.preprocessing_version != PREPROCESSING_VERSION:
        raise ArtifactError(
            f"{path}: trained with preprocessing v{config.preprocessing_version}, "
            f"this code has v{PREPROCESSING_VERSION}"
        )
    return config, "ms-" + hashlib.sha256(data).hexdigest()[:12]


def load_tensors(directory: Path, config: ArtifactConfig) -> dict[str, dict[str, torch.Tensor]]:
    """Read each weights file named in the config, after checking its hash."""
    unsafe = [p.name for p in directory.iterdir() if p.suffix in UNSAFE_SUFFIXES]
    if unsafe:
        raise ArtifactError(
            f"{directory} holds pickle-based weights {unsafe}; only safetensors are loaded"
        )
    out = {}
    for name, expected in config.files.items():
        if Path(name).name != name:  # "../x.safetensors", "/abs/x": outside the artifact
            raise ArtifactError(f"{name}: a weights file must be in the artifact's directory")
        if not name.endswith(".safetensors"):
            raise ArtifactError(f"{name}: only .safetensors weights are loaded")
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing")
        # Hashed and loaded from the same bytes: opened twice, a file replaced in between
        # would load unchecked.
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            raise ArtifactError(f"{path} does not match the sha256 in config.json (tampered?)")
        try:
            out[name.removesuffix(".safetensors")] = load(data)
        except SafetensorError as exc:
            raise ArtifactError(f"{path} is not a valid safetensors file: {exc}") from None
    needed = {"heads.safetensors", MODE_FILES.get(config.mode, "heads.safetensors")}
    if missing := sorted(needed - config.files.keys()):
        raise ArtifactError(f"{directory}: config.json names no {missing} (mode {config.mode})")
    return out
