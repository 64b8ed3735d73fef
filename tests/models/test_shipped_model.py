"""Golden tests of the shipped model: stored scores, batched equals single, sane ordering."""

from __future__ import annotations

import json

import pytest

from models import DEFAULT_ARTIFACT_DIR
from models.runtime import Predictor, load_predictor
from tests.models.golden import GOLDEN_FILE, INPUTS

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", precision="fp32")


def test_fixed_inputs_give_the_stored_scores(predictor: Predictor) -> None:
    golden = json.loads(GOLDEN_FILE.read_text())
    assert golden["model_version"] == predictor.version, (
        "the shipped model changed: regenerate with python -m tests.models.golden"
    )
    assert golden["inputs"] == INPUTS
    for got, want in zip(predictor.predict(INPUTS), golden["scores"], strict=True):
        for task, labels in want.items():
            for label, p in labels.items():
                assert got[task][label] == pytest.approx(p, abs=1e-4)


def test_a_batch_gives_the_same_scores_as_one_by_one(predictor: Predictor) -> None:
    batched = predictor.predict(INPUTS)
    for text, together in zip(INPUTS, batched, strict=True):
        [alone] = predictor.predict([text])
        for task in alone:
            for label in alone[task]:
                assert together[task][label] == pytest.approx(alone[task][label], abs=1e-5)


def test_probabilities_are_distributions(predictor: Predictor) -> None:
    for scores in predictor.predict(INPUTS):
        for task, probs in scores.items():
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5), task
            assert all(0.0 <= p <= 1.0 for p in probs.values())


def test_scores_order_obvious_cases(predictor: Predictor) -> None:
    love, hate, _, bleach, ministry, *_ = predictor.predict(INPUTS)
    assert love["sentiment"]["positive"] > hate["sentiment"]["positive"]
    assert hate["sentiment"]["negative"] > love["sentiment"]["negative"]
    assert bleach["misinformation"]["fake"] > ministry["misinformation"]["fake"]


def test_long_texts_become_windows_of_max_length(predictor: Predictor) -> None:
    long, short = predictor.prepare(["word " * 5000, "short"])
    assert long.rows > 1 and long.tokens == predictor.max_length
    assert short.rows == 1 and short.tokens < predictor.max_length  # not padded
