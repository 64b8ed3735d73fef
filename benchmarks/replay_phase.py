"""The replay figure of ``make bench``: the same backlog replayed, timed in the same run.

``replay_backlog(model, settings, posts)`` replays the whole input topic of ``settings``
(the backlog the live worker has just been timed on, with the same model) through
:func:`worker.replay_run.run_replay`, in process, and returns the posts and the seconds the
replay's loop ran (start-up excluded, as the live figure is timed from its first commit).
The target (issue 9): replay rate >= 0.9 x the live worker's backlog rate.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from models.base import Classifier
from worker.config import Settings
from worker.replay_run import ReplayOptions, run_replay


def replay_backlog(model: Classifier, settings: Settings, posts: int) -> tuple[int, float]:
    """Replay every record of ``settings.input_topic``; (verdicts, seconds)."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as state:
        opts = ReplayOptions(
            from_ms=0, to_ms=None, replay_id="bench", state_dir=Path(state), progress=False
        )
        code = run_replay(settings, opts, model=model, out=lines.append)
    if code != 0:
        raise RuntimeError(f"the replay exited {code}")
    summary = json.loads(lines[-1])
    if summary["verdicts"] != posts:
        raise RuntimeError(f"the replay wrote {summary['verdicts']} verdicts for {posts} posts")
    return int(summary["verdicts"]), float(summary["seconds"])
