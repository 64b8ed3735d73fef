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
    import peft  # noqa: F401  (the train extra, which `make test` installs: a missing one fails)

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


def test_select_average_exports_the_mean_of_the_last_epochs(tmp_path: Path) -> None:
    import peft  # noqa: F401  (the train extra, which `make test` installs: a missing one fails)
    from safetensors.torch import load_file

    from training.finetune import average_states, trainable_state

    ckpt = tmp_path / "ckpt"
    cfg = TrainConfig(
        mode="lora", epochs=2, batch_size=16, lr=3e-3, head_hidden=16, max_length=24, patience=5
    )
    ft = FinetuneConfig(checkpoint_dir=ckpt, select="average", average_last=2)
    _, model = finetune(tiny(), cfg, ft)
    epochs = [load_file(ckpt / f"epoch-{n}.safetensors") for n in (1, 2)]
    exported = trainable_state(model)
    expected = average_states(epochs)
    assert set(exported) == set(expected)
    for name, tensor in exported.items():
        assert tensor.allclose(expected[name], atol=1e-6), name
        assert not tensor.allclose(epochs[1][name]) or epochs[0][name].allclose(epochs[1][name])


def test_average_states_is_the_element_wise_mean() -> None:
    import torch

    from training.finetune import average_states

    a, b = {"w": torch.tensor([1.0, 3.0])}, {"w": torch.tensor([3.0, 5.0])}
    assert average_states([a, b])["w"].tolist() == [2.0, 4.0]
    with pytest.raises(ValueError):
        average_states([])


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_precision_auto_autocasts_where_the_device_has_bf16_and_fp32_never(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--precision auto`` trains under bf16 autocast where the probe finds native bf16 (here
    made to find it); ``fp32`` never autocasts, whatever the probe says (the shipped recipe)."""
    import peft  # noqa: F401  (the train extra, which `make test` installs: a missing one fails)
    import torch

    from training import finetune as module

    real = torch.autocast
    seen: list[tuple[torch.dtype | None, bool]] = []

    def spy(device_type: str, dtype: torch.dtype | None = None, enabled: bool = True) -> object:
        seen.append((dtype, enabled))
        return real(device_type, dtype=dtype, enabled=enabled)

    monkeypatch.setattr(module, "autocast_dtype", lambda device: torch.bfloat16)
    monkeypatch.setattr(torch, "autocast", spy)
    cfg = TrainConfig(
        mode="lora", epochs=1, batch_size=16, lr=3e-3, head_hidden=16, max_length=24, patience=5
    )
    result, _ = finetune(tiny(), cfg, FinetuneConfig(precision=precision))  # type: ignore[arg-type]
    assert seen  # training and validation both ran under torch.autocast
    if precision == "auto":
        assert all(s == (torch.bfloat16, True) for s in seen)
    else:
        assert not any(enabled for _, enabled in seen)
    assert all(torch.isfinite(v).all() for v in result.val_logits.values())
