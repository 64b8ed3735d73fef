"""The serving encoder (models.bert) computes what transformers' BertModel computes, from
the same weights, and serving never imports transformers' model code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import DEFAULT_ARTIFACT_DIR
from models.bert import BertEncoder, BertShape
from models.encoder import (
    base_state,
    encoder_dir,
    load_encoder,
    load_tokenizer,
    mean_pool,
    serving_tokenizer,
)

pytestmark = pytest.mark.model

TEXTS = [
    "ok",
    "What a wonderful day, the garden is finally in bloom!",
    "BREAKING: drinking hot water every 15 minutes cures the virus, share before they delete it",
    "the council meets on Tuesday to discuss the new bus lanes " * 6,
]


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, BertEncoder]:
    shape = BertShape.read(encoder_dir() / "config.json")
    return load_encoder().eval(), BertEncoder.from_bert(shape, base_state())


def batch() -> dict[str, torch.Tensor]:
    """Rows of different lengths, padded: the padding must not change the real tokens."""
    enc = load_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    assert int(enc["attention_mask"].sum(1).min()) < enc["input_ids"].shape[1]
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_the_encoder_matches_transformers_bert_model(pair) -> None:  # type: ignore[no-untyped-def]
    hf, ours = pair
    inputs = batch()
    real = inputs["attention_mask"].bool()
    with torch.inference_mode():
        want = hf(**inputs).last_hidden_state
        got = ours(**inputs)
    assert got.shape == want.shape
    torch.testing.assert_close(got[real], want[real], atol=2e-5, rtol=1e-4)
    pooled = mean_pool(got, inputs["attention_mask"])
    torch.testing.assert_close(pooled, mean_pool(want, inputs["attention_mask"]), atol=1e-5, rtol=0)


def test_the_encoder_matches_under_bf16_autocast(pair) -> None:  # type: ignore[no-untyped-def]
    hf, ours = pair
    inputs = batch()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = mean_pool(hf(**inputs).last_hidden_state.float(), inputs["attention_mask"])
        got = mean_pool(ours(**inputs).float(), inputs["attention_mask"])
    # Both round to bf16 at the same places; the order of some sums differs.
    torch.testing.assert_close(got, want, atol=0.03, rtol=0)
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.999


def test_weights_that_do_not_fit_are_refused() -> None:
    shape = BertShape.read(encoder_dir() / "config.json")
    state = base_state()
    missing = {k: v for k, v in state.items() if "layer.5.output.dense" not in k}
    with pytest.raises(ValueError, match=r"missing \['encoder.layer.5.output.dense"):
        BertEncoder.from_bert(shape, missing)
    with pytest.raises(ValueError, match="unexpected"):
        extra = state["encoder.layer.0.output.dense.weight"]
        BertEncoder.from_bert(shape, {**state, "encoder.layer.6.output.dense.weight": extra})
    wrong = {**state, "embeddings.word_embeddings.weight": torch.zeros(10, 384)}
    with pytest.raises(ValueError, match="size mismatch"):
        BertEncoder.from_bert(shape, wrong)


def test_an_encoder_computed_otherwise_is_refused(tmp_path: Path) -> None:
    config = json.loads((encoder_dir() / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="hidden_act is 'relu', expected 'gelu'"):
        BertShape.read(tmp_path / "config.json")


def test_the_serving_tokenizer_is_transformers_tokenizer() -> None:
    tokenizer, pad_id = serving_tokenizer()
    hf = load_tokenizer()
    assert pad_id == hf.pad_token_id
    for text in TEXTS:
        assert tokenizer.encode(text).ids == hf(text, truncation=False)["input_ids"]


def test_serving_does_not_import_transformers_model_code_or_torch_compiler() -> None:
    """The memory models.bert saves a worker (see its docstring) stays saved, and so does
    what loading the weights on the meta device would cost if a random draw there ran
    through torch's Python reference ops (``BertEncoder.from_bert``: torch._dynamo and
    sympy, about 140 MiB resident)."""
    code = (
        "import sys, json; from pathlib import Path; from models.runtime import load_predictor; "
        f"p = load_predictor(Path({str(DEFAULT_ARTIFACT_DIR)!r}), device='cpu'); "
        "assert p.predict(['a post'])[0]['sentiment']; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers' "
        "or m in ('torch._dynamo', 'sympy'))))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
