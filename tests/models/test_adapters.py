"""LoRA adapters merged into the encoder give the same outputs as peft's adapted model."""

from __future__ import annotations

import pytest
import torch

from models.adapters import merge_lora
from models.artifact import ArtifactError
from models.encoder import load_encoder, load_tokenizer
from training.finetune import LORA_TARGETS

pytestmark = pytest.mark.model


def test_merged_encoder_matches_the_peft_model() -> None:
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    adapted = peft.get_peft_model(
        load_encoder(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS))
    )
    # peft starts B at zero (a no-op); make the adapters do something.
    for name, param in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    adapters = peft.get_peft_model_state_dict(adapted)
    merged = load_encoder()
    base = merged.state_dict()
    before = {k: v.clone() for k, v in base.items()}
    state, count = merge_lora(base, adapters, {"r": 4, "alpha": 8})
    # 6 layers x 6 Linear layers named query/key/value/dense, plus the (unused) pooler dense.
    assert count == 6 * 6 + 1
    assert all(torch.equal(base[k], before[k]) for k in base)  # its input is left alone
    merged.load_state_dict(state)

    batch = load_tokenizer()(
        ["a short post", "another one, a bit longer"], padding=True, return_tensors="pt"
    )
    adapted.eval()
    merged.eval()
    with torch.inference_mode():
        want = adapted(**batch).last_hidden_state
        got = merged(**batch).last_hidden_state
        plain = load_encoder().eval()(**batch).last_hidden_state
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
