"""``modstream replay --compare-with``: the shipped model against a candidate artifact over a
small topic, in one pass, writing the agreement report."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from models import DEFAULT_ARTIFACT_DIR
from tests.integration.helpers import create_topics, events, settings_for
from tests.integration.test_replay import PARTITIONS, produce_at, start_replay

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
