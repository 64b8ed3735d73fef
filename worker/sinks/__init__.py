"""Sinks: where verdicts and dead letters go. Each one takes a whole batch and returns only
once the destination has acknowledged every item, or raises :class:`SinkError`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

T_contra = TypeVar("T_contra", contravariant=True)


class SinkError(RuntimeError):
    """A batch was not (fully) acknowledged; the caller retries it, offsets stay put."""


class Sink(Protocol[T_contra]):
    name: str

    def write_batch(self, items: Sequence[T_contra]) -> None: ...

    def close(self) -> None: ...
