"""The replay figure of ``make bench``: the live worker's backlog replayed, in the same run.

``replay_backlog(model, settings, posts)`` replays the whole input topic of ``settings``
(the backlog the live worker has just been timed on, with the same model object) through
:func:`worker.replay_run.run_replay`, in this process, the way ``modstream replay --from 0``
does. It is timed as the live phase is: from the first commit (connections made, the first
batch done) to the commit of the last record, the commits read from the replay's resume
file, which the replay writes at every commit. The target (issue 9): replay rate >= 0.9 x
the live worker's backlog rate.
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from worker_phases import Counters, WorkerRun, wait  # benchmarks/ is on the path

from models.base import Classifier
from modstream_dev.stack import create_topics
from worker.config import Settings
from worker.replay import ReplayState
from worker.replay_run import ReplayOptions, replay_settings, run_replay

REPLAY_ID = "bench"


def _committed(state_path: Path) -> int:
    """Records the replay has committed so far (0 before its first state is saved)."""
    try:
        state = ReplayState.load(state_path)
    except (OSError, ValueError):  # not there yet
        return 0
    return 0 if state is None else state.done


class _Timer:
    """On its own thread: the time and count of the replay's first commit, then the time
    its last record is committed, as from_backlog times the live worker."""

    def __init__(self, state_path: Path, posts: int) -> None:
        self._path = state_path
        self._posts = posts
        self.run: WorkerRun | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._time, name="replay-timer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _time(self) -> None:
        try:
            wait(lambda: _committed(self._path) > 0, "the replay's first commit", 0.005)
            counters = Counters()
            first = _committed(self._path)
            started = time.perf_counter()
            wait(lambda: _committed(self._path) >= self._posts, "the replay's last commit", 0.01)
            self.run = WorkerRun(self._posts - first, time.perf_counter() - started)
            counters.fill(self.run)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc

    def result(self) -> WorkerRun:
        self._thread.join(60)
        if self.run is None:
            raise RuntimeError(f"the replay was not timed: {self.error!r}")
        return self.run


def replay_backlog(
    model: Classifier, settings: Settings, posts: int
) -> tuple[WorkerRun, dict[str, Any]]:
    """Replay every record of ``settings.input_topic`` (``posts`` of them) on this thread
    (the replay installs signal handlers, which only the main thread may); the timed run
    and the replay's own summary."""
    lines: list[str] = []
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with tempfile.TemporaryDirectory() as state:
        opts = ReplayOptions(
            from_ms=0, to_ms=None, replay_id=REPLAY_ID, state_dir=Path(state), progress=False
        )
        target = replay_settings(settings, opts, REPLAY_ID)
        # As the live phase's topics: made beforehand, with the same partitions.
        create_topics(target, topics=(target.output_topic, target.dlq_topic))
        timer = _Timer(Path(state) / REPLAY_ID / "state.json", posts)
        timer.start()
        try:
            code = run_replay(settings, opts, model=model, out=lines.append)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        run = timer.result()
    if code != 0:
        raise RuntimeError(f"the replay exited {code}")
    summary: dict[str, Any] = json.loads("".join(lines))
    if summary["verdicts"] != posts:
        raise RuntimeError(f"the replay wrote {summary['verdicts']} verdicts for {posts} posts")
    return run, summary
