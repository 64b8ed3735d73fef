"""LoRA fine-tuning on a tiny synthetic set: it learns, checkpoints, and resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.models.test_artifact import synthetic_tasks
from training.data import TaskData
from training.finetune import FinetuneConfig, finetune
from training.train import TrainConfig

pytestmark = pytest.mark.model


def tiny() -> list[TaskData]:
    return [TaskData(t.task, t.labels, t.train[::4], t.val[::4]) for t in synthetic_tasks()]


def test_lora_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    ckpt = tmp_path / "ckpt"
    cfg = TrainConfig(
        mode="lora", epochs=1, batch_size=16, lr=3e-3, head_hidden=16, max_length=24, patience=5
    )
    first, _ = finetune(tiny(), cfg, FinetuneConfig(checkpoint_dir=ckpt))
    assert {p.name for p in ckpt.iterdir()} >= {
        "best.safetensors",
        "last.safetensors",
        "optimizer.pt",
        "state.json",
    }
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 1

    longer = dataclasses.replace(cfg, epochs=3)
    resumed, _ = finetune(tiny(), longer, FinetuneConfig(checkpoint_dir=ckpt, resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == first.history[0]  # epoch 1 was not trained again
    assert resumed.history[-1]["train_loss"] < first.history[0]["train_loss"]
