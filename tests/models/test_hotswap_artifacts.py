"""Hot-swap with the real loader: broken copies of the shipped artifact are refused with the
reason, and a good copy with another version is loaded, probed and offered."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import DEFAULT_ARTIFACT_DIR
from models.artifact import artifact_version
from models.base import Classifier
from worker.app import make_policy
from worker.config import load_settings
from worker.hotswap import Candidate, ModelReloader, Refused, SwapSlot, artifact_loader

pytestmark = pytest.mark.model

SETTINGS = load_settings(device="cpu")


def copy(tmp_path: Path, name: str = "copy") -> Path:
    dest = tmp_path / name
    shutil.copytree(DEFAULT_ARTIFACT_DIR, dest)
    return dest


def edit_config(directory: Path, **changes: object) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def pin(directory: Path, name: str) -> None:
    """Record ``name``'s current hash in config.json, as an exporter would have."""
    config = json.loads((directory / "config.json").read_text())
    config["files"][name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    edit_config(directory, files=config["files"])


def missing_heads(d: Path) -> None:
    (d / "heads.safetensors").unlink()


def tampered_heads(d: Path) -> None:
    data = bytearray((d / "heads.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (d / "heads.safetensors").write_bytes(bytes(data))


def corrupt_but_pinned(d: Path) -> None:
    path = d / "heads.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    pin(d, "heads.safetensors")


def wrong_shapes(d: Path) -> None:
    heads = load_file(d / "heads.safetensors")
    heads["heads.sentiment.net.4.weight"] = torch.zeros(4, 256)
    heads["heads.sentiment.net.4.bias"] = torch.zeros(4)
    save_file(heads, d / "heads.safetensors")
    pin(d, "heads.safetensors")


def zero_temperature(d: Path) -> None:
    edit_config(d, temperatures={"misinformation": 0.0, "sentiment": 1.0})


def reloader_for(directory: Path, slot: SwapSlot) -> ModelReloader:
    def policy_for(model: Classifier) -> object:
        return make_policy(SETTINGS, model)

    return ModelReloader(
        directory,
        slot,
        artifact_version(DEFAULT_ARTIFACT_DIR),
        artifact_loader(SETTINGS),
        policy_for,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (missing_heads, "heads.safetensors is missing"),
        (tampered_heads, "does not match the sha256 in config.json"),
        (corrupt_but_pinned, "is not a valid safetensors file"),
        (wrong_shapes, "size mismatch"),
        (zero_temperature, "temperatures must be positive"),
    ],
)
def test_a_broken_artifact_is_refused_with_its_reason(
    tmp_path: Path, damage: Callable[[Path], None], reason: str
) -> None:
    directory = copy(tmp_path)
    edit_config(directory, training={"note": "broken"})  # another version than the shipped
    damage(directory)
    slot = SwapSlot()
    outcome = reloader_for(directory, slot).check(forced=True)
    assert isinstance(outcome, Refused), outcome
    assert reason in outcome.reason
    assert outcome.path == directory.resolve()
    assert not slot.waiting()


def test_a_good_copy_with_another_version_is_offered(tmp_path: Path) -> None:
    directory = copy(tmp_path)
    edit_config(
        directory,
        training={"note": "v2"},
        policy={"block_fake": 0.97, "review_fake": 0.6, "review_negative": 0.85},
    )
    slot = SwapSlot()
    outcome = reloader_for(directory, slot).check(forced=True)
    assert isinstance(outcome, Candidate), outcome
    assert outcome.model.version == artifact_version(directory)
    assert outcome.model.version != artifact_version(DEFAULT_ARTIFACT_DIR)
    assert (outcome.policy.block_fake, outcome.policy.review_fake) == (0.97, 0.6)
    assert slot.take() is outcome
