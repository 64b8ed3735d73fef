"""``python -m tests.integration.failing_model``: ``modstream run`` (same settings, same
process life, same exit codes) with the shipped model wrapped so that every forward pass
raises, as a lost device or corrupt weights would. It tokenises as the real model does.

Nothing in the worker knows about it: it passes the model through :func:`worker.app.run`'s
``model`` argument, the way an embedding application would.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence

from models.base import Classifier, Encoded, Scores
from worker.app import load_model, run
from worker.config import load_settings
from worker.errors import StartupError


class AlwaysFailing:
    """The real model's tokenizer, labels and policy; a forward pass that always fails."""

    def __init__(self, real: Classifier) -> None:
        self._real = real
        self.version = real.version
        self.max_length = real.max_length

    @property
    def labels(self) -> Mapping[str, Sequence[str]]:
        return self._real.labels

    @property
    def policy(self) -> Mapping[str, float]:
        return self._real.policy

    @property
    def concurrency(self) -> int:
        return self._real.concurrency

    def padded_shape(self, rows: int, width: int) -> tuple[int, int]:
        return self._real.padded_shape(rows, width)

    def prepare(self, texts: Sequence[str]) -> list[Encoded]:
        return self._real.prepare(texts)

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")

    def predict(self, texts: Sequence[str]) -> list[Scores]:
        return self.predict_encoded(self.prepare(texts))


def main() -> int:
    settings = load_settings()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        return run(settings, model=AlwaysFailing(load_model(settings)))
    except StartupError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
