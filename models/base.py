"""The small interface the worker sees: labels, ``max_length``, and scoring in two steps.

Scoring is split so the worker can run the steps on different threads (the shape of TEI's
queue and model tasks): :meth:`Classifier.prepare` normalises and tokenises on the CPU, and
its real token counts size the micro-batches; :meth:`Classifier.predict_encoded` pads,
runs the model on its device and returns exactly one result per post.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# task name -> label -> probability, one mapping per input text.
Scores = dict[str, dict[str, float]]

SENTIMENT = "sentiment"
MISINFORMATION = "misinformation"


@dataclass(frozen=True, slots=True)
class Encoded:
    """One post, tokenised: its windows of token ids (special tokens included).

    A post that fits the model's ``max_length`` has one window; a longer one has several
    (head, tail and strided middle), which the model scores as separate rows and folds back
    into one result for the post.
    """

    windows: tuple[tuple[int, ...], ...]

    @property
    def rows(self) -> int:
        """Rows this post adds to a model batch."""
        return len(self.windows)

    @property
    def tokens(self) -> int:
        """Length of its longest window: what a batch holding it is padded to at least."""
        return max(len(w) for w in self.windows)


class Classifier(Protocol):
    """A multi-task text classifier.

    ``prepare`` is pure CPU work with no device access, safe to call from any thread.
    ``predict_encoded`` runs the model; at most :attr:`concurrency` calls at once, each on
    its own thread (the worker runs that many model replicas); it returns exactly one result
    per item, in order. ``predict`` is both in one call, for tools and tests.
    """

    @property
    def concurrency(self) -> int: ...

    @property
    def version(self) -> str: ...

    @property
    def max_length(self) -> int: ...

    @property
    def labels(self) -> Mapping[str, Sequence[str]]: ...

    @property
    def policy(self) -> Mapping[str, float]: ...

    def padded_shape(self, rows: int, width: int) -> tuple[int, int]:
        """(rows, tokens) the model computes for a batch of ``rows`` rows whose longest
        has ``width`` tokens: any padding of its own included (a predictor may round
        shapes up)."""
        ...

    def prepare(self, texts: Sequence[str]) -> list[Encoded]: ...

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]: ...

    def predict(self, texts: Sequence[str]) -> list[Scores]: ...
