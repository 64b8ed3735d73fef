"""LoRA adapters merged into the encoder give the same outputs as peft's adapted model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.adapters import merge_lora
from models.artifact import ArtifactConfig, ArtifactError, save_artifact
from models.classifier import MultiTaskHeads
from models.encoder import encoder_sha256, load_encoder, load_tokenizer, mean_pool
from models.runtime import load_model
from training.finetune import LORA_TARGETS

pytestmark = pytest.mark.model


def peft_adapted() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """transformers' encoder with random LoRA adapters through peft (r 4, alpha 8), and the
    adapters alone under peft's names."""
    import peft  # the train extra, which `make test` installs: a missing one fails

    torch.manual_seed(0)
    adapted = peft.get_peft_model(
        load_encoder(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS))
    )
    # peft starts B at zero (a no-op); make the adapters do something.
    for name, param in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    return adapted.eval(), peft.get_peft_model_state_dict(adapted)


def batch() -> dict[str, torch.Tensor]:
    enc = load_tokenizer()(
        ["a short post", "another one, a bit longer"], padding=True, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_merged_encoder_matches_the_peft_model() -> None:
    adapted, adapters = peft_adapted()
    merged = load_encoder()
    base = merged.state_dict()
    before = {k: v.clone() for k, v in base.items()}
    state, count = merge_lora(base, adapters, {"r": 4, "alpha": 8})
    # 6 layers x 6 Linear layers named query/key/value/dense, plus the (unused) pooler dense.
    assert count == 6 * 6 + 1
    assert all(torch.equal(base[k], before[k]) for k in base)  # its input is left alone
    merged.load_state_dict(state)

    inputs = batch()
    merged.eval()
    with torch.inference_mode():
        want = adapted(**inputs).last_hidden_state
        got = merged(**inputs).last_hidden_state
        plain = load_encoder().eval()(**inputs).last_hidden_state
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapters did change the encoder


def test_adapters_that_fit_no_layer_are_refused() -> None:
    a = torch.zeros(4, 384)
    with pytest.raises(ArtifactError, match="does not match"):
        merge_lora(
            load_encoder().state_dict(),
            {"base_model.model.nope.lora_A.weight": a, "base_model.model.nope.lora_B.weight": a.T},
            {"r": 4, "alpha": 8},
        )
    with pytest.raises(ArtifactError, match="'r' and 'alpha'"):
        merge_lora(load_encoder().state_dict(), {}, {})


def test_a_lora_artifact_serves_the_encoder_peft_adapts(tmp_path: Path) -> None:
    """What the worker loads (models.runtime.load_model: the base weights, the adapters
    merged, the serving encoder) computes what peft's adapted model computes."""
    adapted, adapters = peft_adapted()
    labels = {"sentiment": ["negative", "positive"]}
    config = ArtifactConfig(
        base_encoder_sha256=encoder_sha256(),
        mode="lora",
        labels=labels,
        head_hidden=8,
        max_length=32,
        temperatures={"sentiment": 1.0},
        policy={},
        lora={"r": 4, "alpha": 8},
    )
    heads = MultiTaskHeads(384, 8, labels).state_dict()
    save_artifact(tmp_path, config, {"heads": heads, "adapters": adapters})
    served, _, _ = load_model(tmp_path)
    inputs = batch()
    with torch.inference_mode():
        want = mean_pool(adapted(**inputs).last_hidden_state, inputs["attention_mask"])
        got = served.embed(**inputs)
        plain = mean_pool(
            load_encoder().eval()(**inputs).last_hidden_state, inputs["attention_mask"]
        )
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)
