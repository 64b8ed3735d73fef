import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from models.base import Encoded, Scores
from tests.fakes import FakeModel
from worker.pipeline import NonFiniteScoreError, Pipeline, ResultCountError
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.schema import Post, PostEvent, SourceRef

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def posts(*texts: str) -> list[Post]:
    return [
        Post(PostEvent(post_id=f"p{i}", text=t), SourceRef("posts", 0, i), NOW)
        for i, t in enumerate(texts)
    ]


def test_verdict_fields() -> None:
    pipe = Pipeline(FakeModel(), Policy(), Pseudonymiser(b"k"), clock=lambda: NOW)
    [v] = pipe.classify(posts("this is fake"))
    assert v.misinformation.label == "fake" and v.misinformation.score == pytest.approx(0.97)
    assert v.sentiment.label in {"neutral", "positive"}
    assert set(v.sentiment.scores) == {"negative", "neutral", "positive"}
    assert v.model_version == "fake-1" and v.processed_at == NOW
    assert (v.source_topic, v.source_partition, v.source_offset) == ("posts", 0, 0)


class ShortModel(FakeModel):
    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        return super().predict_encoded(items)[:-1]


def test_a_model_that_loses_a_result_is_an_error() -> None:
    pipe = Pipeline(ShortModel(), Policy(), Pseudonymiser(b"k"))
    with pytest.raises(ResultCountError):
        pipe.classify(posts("a", "b"))


class NanModel(FakeModel):
    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        out = super().predict_encoded(items)
        out[-1]["misinformation"]["fake"] = float("nan")
        return out


def test_a_model_that_returns_nan_is_an_error_not_an_allow() -> None:
    pipe = Pipeline(NanModel(), Policy(), Pseudonymiser(b"k"))
    with pytest.raises(NonFiniteScoreError, match="p1"):
        pipe.classify(posts("a", "b"))


def test_posts_tokenised_elsewhere_are_not_tokenised_again() -> None:
    model = FakeModel()
    pipe = Pipeline(model, Policy(), Pseudonymiser(b"k"), clock=lambda: NOW)
    batch = posts("this is fake", "fine")
    encoded = model.prepare([p.event.text for p in batch])
    verdicts = pipe.classify(batch, encoded)
    assert model.prepared == [2]  # only the call above
    assert [v.misinformation.label for v in verdicts] == ["fake", "real"]


def test_a_verdict_is_serialised_once_and_a_changed_copy_anew() -> None:
    pipe = Pipeline(FakeModel(), Policy(), Pseudonymiser(b"k"), clock=lambda: NOW)
    [v] = pipe.classify(posts("this is fake"))
    assert v.serialized == v.model_dump_json()
    assert v.serialized is v.serialized  # made once, shared by both sinks
    replayed = v.model_copy(update={"replay_id": "r1"})
    assert json.loads(replayed.serialized)["replay_id"] == "r1"
    assert json.loads(v.serialized)["replay_id"] is None
    assert replayed == v.model_copy(update={"replay_id": "r1"})  # the cache is not compared
