"""Shadow comparison: both models in one pass, the comparison log and the agreement report."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.base import Encoded, Scores
from tests.fakes import FakeConsumer, FakeModel, ListSink, ManualClock, SendingListSink, record
from worker.batcher import BatchLimits, MicroBatcher, Size
from worker.checkpoint import Partition
from worker.loop import LoopConfig, Worker
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.schema import Post, PostEvent, SourceRef, Verdict
from worker.shadow import Comparison, ShadowLog, ShadowPipeline
from worker.shadow_report import build_report, markdown, write_report


class StricterModel(FakeModel):
    """A candidate that finds 'maybe' posts much more likely fake than the live model."""

    version = "fake-2"

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        scores = super().predict_encoded(items)
        for item, s in zip(items, scores, strict=True):
            if "maybe" in self._words_of(item):
                s["misinformation"] = {"real": 0.05, "fake": 0.95}
        return scores


def posts(texts: Sequence[str]) -> list[Post]:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Post(PostEvent(post_id=f"p{i}", text=t), SourceRef("posts", 0, i), when)
        for i, t in enumerate(texts)
    ]


def pipeline(tmp_path: Path, candidate: FakeModel, store_text: bool = False) -> ShadowPipeline:
    live = FakeModel()
    # One vocabulary, as two fine-tunes of one base encoder share one tokenizer.
    candidate._ids, candidate._words = live._ids, live._words
    return ShadowPipeline(
        live,
        Policy(),
        Pseudonymiser(b"k"),
        candidate=candidate,
        candidate_policy=Policy(),
        shadow_log=ShadowLog(tmp_path / "shadow.jsonl"),
        store_text=store_text,
        replay_id="r1",
    )


TEXTS = ["hello there", "maybe true", "fake claim", "hate it", "maybe not"]


def test_each_post_is_scored_by_both_models_on_one_tokenisation(tmp_path: Path) -> None:
    candidate = StricterModel()
    shadow = pipeline(tmp_path, candidate)
    assert shadow.shared_tokens
    verdicts = shadow.classify(posts(TEXTS))
    assert [v.action.value for v in verdicts] == ["allow", "review", "block", "review", "review"]
    assert all(v.replay_id == "r1" for v in verdicts)
    assert candidate.prepared == [3]  # only the probes: the batch was tokenised once
    got = ShadowLog(tmp_path / "shadow.jsonl").read()
    assert [(c.post_id, c.live_action, c.candidate_action) for c in got] == [
        ("p0", "allow", "allow"),
        ("p1", "review", "block"),
        ("p2", "block", "block"),
        ("p3", "review", "review"),
        ("p4", "review", "block"),
    ]
    assert got[1].live_fake == 0.6 and got[1].candidate_fake == 0.95
    assert all(c.text is None for c in got)


def test_a_candidate_with_another_tokenisation_tokenises_on_its_own(tmp_path: Path) -> None:
    candidate = StricterModel(max_length=16)
    shadow = pipeline(tmp_path, candidate, store_text=True)
    assert not shadow.shared_tokens
    shadow.classify(posts(TEXTS[:2]))
    assert candidate.prepared[-1] == 2
    got = ShadowLog(tmp_path / "shadow.jsonl").read()
    assert [c.text for c in got] == TEXTS[:2]  # kept only because store_text allows it


def comparison(offset: int, live: str, cand: str, fake: tuple[float, float]) -> Comparison:
    return Comparison(f"p{offset}", 0, offset, live, cand, fake[0], fake[1], 0.1, 0.1)


def test_the_log_keeps_one_comparison_per_record_and_survives_a_cut_line(tmp_path: Path) -> None:
    log = ShadowLog(tmp_path / "s.jsonl")
    log.append([comparison(0, "allow", "allow", (0.1, 0.1))])
    log.append([comparison(0, "allow", "review", (0.1, 0.7))])  # redone after a resume
    with log.path.open("a") as fh:
        fh.write('{"post_id": "p1", "partit')  # killed mid-write
    assert [(c.offset, c.candidate_action) for c in log.read()] == [(0, "review")]


def test_report_counts_flips_and_lists_the_largest_changes_first(tmp_path: Path) -> None:
    comps = [
        comparison(0, "allow", "allow", (0.1, 0.12)),
        comparison(1, "allow", "review", (0.45, 0.55)),
        comparison(2, "review", "block", (0.6, 0.99)),
        comparison(3, "block", "block", (0.95, 0.97)),
    ]
    report = build_report(comps, "live-1", "cand-2")
    assert report["posts"] == 4 and report["flips"] == 2
    assert report["agreement"] == 0.5
    assert report["confusion"]["allow"] == {"allow": 1, "review": 1, "block": 0}
    assert report["confusion"]["review"]["block"] == 1
    assert report["actions"]["candidate"] == {"allow": 1, "review": 1, "block": 2}
    assert [f["post_id"] for f in report["top_flips"]] == ["p2", "p1"]
    assert "text" not in report["top_flips"][0]
    assert report["scores"]["fake"]["live"]["histogram"] == [0, 1, 0, 0, 1, 0, 1, 0, 0, 1]
    assert sum(report["scores"]["fake"]["candidate"]["histogram"]) == 4

    text = markdown(report)
    assert "| allow | 1 | 1 | 0 | 2 |" in text and "| p2 | review | block |" in text

    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["flips"] == 2
    assert paths["markdown"].read_text() == text
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_no_posts_says_so() -> None:
    report = build_report([], "a", "b")
    assert report["posts"] == 0 and report["agreement"] is None
    assert "No post changes action." in markdown(report)


class NaNModel(FakeModel):
    """A candidate that scores 'fake' posts NaN (and 'hate' posts out of range)."""

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        scores = super().predict_encoded(items)
        for item, s in zip(items, scores, strict=True):
            if "fake" in self._words_of(item):
                s["misinformation"]["fake"] = float("nan")
            if "hate" in self._words_of(item):
                s["sentiment"]["negative"] = 1.5
        return scores


class ShortModel(FakeModel):
    """A candidate that returns one result fewer than it is given posts."""

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        return super().predict_encoded(items)[1:]


def live_verdicts(texts: Sequence[str]) -> list[tuple[str, str, float]]:
    verdicts = Pipeline(FakeModel(), Policy(), Pseudonymiser(b"k")).classify(posts(texts))
    return [(v.post_id, v.action.value, v.misinformation.score) for v in verdicts]


@pytest.mark.parametrize(
    "candidate",
    [FakeModel(fail_on="hate", version="cand-3"), ShortModel(version="cand-3")],
    ids=["raises", "wrong-count"],
)
def test_a_failing_candidate_leaves_the_live_verdicts_and_is_counted(
    tmp_path: Path, candidate: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    shadow = pipeline(tmp_path, candidate)
    with caplog.at_level(logging.WARNING, logger="worker.shadow"):
        verdicts = shadow.classify(posts(TEXTS))
    assert [(v.post_id, v.action.value, v.misinformation.score) for v in verdicts] == (
        live_verdicts(TEXTS)
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cand-3" in warnings[0].getMessage()  # once per batch
    report = build_report(ShadowLog(tmp_path / "shadow.jsonl").read(), "fake-1", "cand-3")
    assert report["posts"] == 5 and report["candidate_errors"] == 5
    assert report["compared"] == 0 and report["agreement"] is None
    assert "No candidate score (candidate errors): 5" in markdown(report)


def test_non_finite_or_out_of_range_candidate_scores_are_candidate_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shadow = pipeline(tmp_path, NaNModel(version="fake-nan"))
    with caplog.at_level(logging.WARNING, logger="worker.shadow"):
        verdicts = shadow.classify(posts(TEXTS))
    assert [(v.post_id, v.action.value, v.misinformation.score) for v in verdicts] == (
        live_verdicts(TEXTS)
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "fake-nan" in warnings[0].getMessage()
    assert "NaN" not in (tmp_path / "shadow.jsonl").read_text()  # never reaches the log
    report = build_report(ShadowLog(tmp_path / "shadow.jsonl").read(), "fake-1", "fake-nan")
    assert (report["posts"], report["compared"], report["candidate_errors"]) == (5, 3, 2)
    assert sum(report["scores"]["fake"]["candidate"]["histogram"]) == 3


def test_a_candidate_failing_on_every_batch_never_dead_letters_nor_stops_the_worker(
    tmp_path: Path,
) -> None:
    consumer = FakeConsumer()
    redis, dlq = ListSink("redis"), SendingListSink("dead_letter")
    worker = Worker(
        consumer,
        MicroBatcher(
            BatchLimits(2, 0.05, 10_000),
            lambda p: Size(p.encoded.rows, p.encoded.tokens),
            clock=ManualClock(),
        ),
        pipeline(tmp_path, FakeModel(fail_on="*", version="cand-3")),
        [redis, SendingListSink("kafka")],
        dlq,
        LoopConfig(model_failure_limit=2),
        clock=ManualClock(),
        threaded=False,
    )
    consumer.subscribe(worker._on_revoked, worker._on_assigned)
    consumer.queue = [record(i, {"post_id": f"p{i}", "text": t}) for i, t in enumerate(TEXTS)]
    for _ in range(3):
        worker.step()
    assert sorted(v.post_id for v in redis.items if isinstance(v, Verdict)) == [
        f"p{i}" for i in range(5)
    ]
    assert dlq.items == []
    assert consumer.committed() == {Partition("posts", 0): 5}
    report = build_report(ShadowLog(tmp_path / "shadow.jsonl").read(), "fake-1", "cand-3")
    assert report["candidate_errors"] == 5


def test_report_skips_and_counts_non_finite_scores_of_an_old_log(tmp_path: Path) -> None:
    log = ShadowLog(tmp_path / "s.jsonl")
    log.append(
        [
            comparison(0, "allow", "allow", (0.1, 0.12)),
            comparison(1, "review", "allow", (0.6, float("nan"))),  # as logged before checks
            comparison(2, "allow", "block", (0.1, float("inf"))),
            comparison(3, "review", "block", (0.6, 0.95)),
        ]
    )
    report = build_report(log.read(), "live-1", "cand-2")
    assert (report["posts"], report["compared"], report["non_finite"]) == (4, 2, 2)
    assert report["candidate_errors"] == 0
    assert report["flips"] == 1 and report["agreement"] == 0.5
    assert [f["post_id"] for f in report["top_flips"]] == ["p3"]
    assert sum(report["scores"]["fake"]["candidate"]["histogram"]) == 2
    assert "Left out for a score that is not finite: 2" in markdown(report)
    paths = write_report(report, tmp_path / "out")
    json.loads(paths["json"].read_text(), parse_constant=pytest.fail)  # strict JSON, no NaN
