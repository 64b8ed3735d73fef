"""The small interface the worker sees: labels, ``max_length``, ``predict(texts)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

# task name -> label -> probability, one mapping per input text.
Scores = dict[str, dict[str, float]]

SENTIMENT = "sentiment"
MISINFORMATION = "misinformation"


class Classifier(Protocol):
    """A multi-task text classifier. ``predict`` returns exactly one result per text."""

    @property
    def version(self) -> str: ...

    @property
    def max_length(self) -> int: ...

    @property
    def labels(self) -> Mapping[str, Sequence[str]]: ...

    @property
    def policy(self) -> Mapping[str, float]: ...

    def predict(self, texts: Sequence[str]) -> list[Scores]: ...


def estimate_tokens(text: str, max_length: int) -> int:
    """A cheap upper-bound guess of a text's token count, for the batcher's budget.

    WordPiece yields roughly one token per 3-4 characters of tweet-like English; the guess
    errs high so a batch stays within its budget, and is clipped to the truncation length.
    """
    return min(max_length, len(text) // 3 + 2)
