"""``modstream replay --compare-with``: the shipped model against a candidate artifact over a
small topic, in one pass, writing the agreement report; a failing candidate changes nothing
that is written."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis

from models import DEFAULT_ARTIFACT_DIR
from models.base import Encoded, Scores
from tests.fakes import FakeModel
from tests.integration.helpers import create_topics, events, read_topic, settings_for
from tests.integration.test_replay import (
    PARTITIONS,
    keys_under,
    produce_at,
    start_replay,
)
from worker.replay_run import ReplayOptions, run_replay

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]


def candidate_artifact(directory: Path) -> Path:
    """The shipped weights under a policy that never allows: every live 'allow' flips."""
    shutil.copytree(DEFAULT_ARTIFACT_DIR, directory)
    config = json.loads((directory / "config.json").read_text())
    config["policy"] = {**config["policy"], "review_fake": 0.0, "review_negative": 0.0}
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def test_shadow_run_writes_the_agreement_report(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=PARTITIONS)
    start = int(time.time() * 1000) - 600_000
    posts = events(run_id, 60)
    produce_at(settings, posts, start)
    candidate = candidate_artifact(tmp_path / "candidate")
    rid = f"s-{run_id}"
    args = ["--from", str(start), "--replay-id", rid, "--state-dir", str(tmp_path / "state")]
    proc = start_replay(settings, [*args, "--compare-with", str(candidate)], tmp_path / "log")
    try:
        out, _ = proc.communicate(timeout=3000)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (tmp_path / "log").read_text()[-3000:]
    summary = json.loads(out)
    run_dir = tmp_path / "state" / rid
    report = json.loads((run_dir / "shadow-report.json").read_text())

    assert summary["verdicts"] == report["posts"] == len(posts)
    assert report["candidate_model"] != report["live_model"] == summary["model_version"]
    assert report["actions"]["live"] == summary["actions"]
    assert sum(sum(row.values()) for row in report["confusion"].values()) == len(posts)
    # The candidate has the same weights and never allows: exactly the live allows flip.
    assert report["flips"] == summary["actions"]["allow"] > 0
    assert report["confusion"]["allow"]["review"] == report["flips"]
    assert report["actions"]["candidate"]["allow"] == 0
    assert report["scores"]["fake"]["live"] == report["scores"]["fake"]["candidate"]
    ids = {e["post_id"] for e in posts}
    assert {f["post_id"] for f in report["top_flips"]} <= ids
    assert all("text" not in f for f in report["top_flips"])  # MODSTREAM_STORE_TEXT is off
    assert "# Shadow comparison" in (run_dir / "shadow-report.md").read_text()
    assert (run_dir / "shadow-report.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["shadow"]["flips"] == report["flips"]


class NaNModel(FakeModel):
    """A candidate that scores P(negative) NaN for posts with 'hate' in them."""

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        scores = super().predict_encoded(items)
        for item, s in zip(items, scores, strict=True):
            if "hate" in self._words_of(item):
                s["sentiment"]["negative"] = float("nan")
        return scores


# The candidates of the review's repros (/tmp/review_replay/shadow_fail.py and
# shadow_allfail.py): failing on some posts, on every post, NaN on some posts. Before the
# fix they made dead letters of live verdicts, stopped the replay ("the model is broken")
# or crashed the report.
@pytest.mark.parametrize(
    ("candidate", "errors"),
    [
        # every post of a batch holding a 'hate' one: the 10 and any batched with them
        (FakeModel(fail_on="hate", version="cand", first_id=50), range(10, 41)),
        (FakeModel(fail_on="*", version="cand", first_id=50), range(40, 41)),
        (NaNModel(version="cand", first_id=50), range(10, 11)),  # the 'hate' posts alone
    ],
    ids=["fails-on-some", "fails-on-all", "nan"],
)
def test_a_failing_candidate_leaves_the_live_verdicts_written_and_no_dead_letters(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
    tmp_path: Path,
    candidate: FakeModel,
    errors: range,
) -> None:
    settings = settings_for(services, run_id)
    replay_out, replay_dlq = f"{settings.output_topic}.replay", f"{settings.dlq_topic}.replay"
    create_topics(settings, PARTITIONS, [settings.input_topic, replay_out, replay_dlq])
    start = int(time.time() * 1000) - 600_000
    posts = events(run_id, 40)  # every fourth says "hate"
    produce_at(settings, posts, start)
    rid = f"s-{run_id}"
    opts = ReplayOptions(
        from_ms=start, to_ms=None, replay_id=rid, state_dir=tmp_path / "state", progress=False
    )
    said: list[str] = []

    rc = run_replay(
        settings, opts, model=FakeModel(version="live"), candidate=candidate, out=said.append
    )

    assert rc == 0
    summary = json.loads(said[-1])
    assert summary["verdicts"] == len(posts) and summary["dead_letters"] == {}
    client = redis.Redis.from_url(services.redis_url)
    ids = {e["post_id"] for e in posts}
    assert keys_under(client, f"modstream:verdict:replay:{rid}:") == ids
    written = read_topic(settings, replay_out, len(posts))
    assert {json.loads(r.value)["model_version"] for r in written} == {"live"}
    assert {json.loads(r.value)["post_id"] for r in written} == ids
    assert read_topic(settings, replay_dlq, 1, timeout=5) == []
    report = json.loads((tmp_path / "state" / rid / "shadow-report.json").read_text())
    assert report["posts"] == len(posts)
    assert report["compared"] + report["candidate_errors"] == len(posts)
    assert report["candidate_errors"] in errors
    assert summary["shadow"]["candidate_errors"] == report["candidate_errors"]
    assert report["non_finite"] == 0
