"""``python -m tests.integration.fake_model_replay replay ARGS``: ``modstream replay ARGS``
(same arguments, settings, process life and exit codes) with a keyword FakeModel in place of
each artifact, its version the artifact directory's name (``--model /x/model-A``: version
``model-A``), so that replays with two models run in seconds on a CPU.

Nothing in the worker knows about it: it replaces the replay's model loader, the way
``failing_model`` wraps the live worker's model.
"""

from __future__ import annotations

import sys

from tests.fakes import FakeModel
from worker import replay_run
from worker.cli import main
from worker.config import Settings


def fake_model(settings: Settings) -> FakeModel:
    return FakeModel(version=settings.model_dir.name)


if __name__ == "__main__":
    setattr(replay_run, "load_model", fake_model)  # noqa: B010 (a module's name, not a typo)
    sys.exit(main(sys.argv[1:]))
