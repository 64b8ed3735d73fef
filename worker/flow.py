"""What moves between the worker's stages, and the channels it moves through.

The stages (see :mod:`worker.stages`) run on their own threads and share one lock and
condition (:class:`Board`): every channel put or take wakes whoever waits, and a stage
checks "do I have work?" under that lock, so no wake-up is lost. Channels never block a
producer: a bounded channel is bounded by its producer, which checks
:meth:`Channel.has_room` before putting (the main thread, which must never block, feeds
unbounded channels and is bounded by the in-flight count instead: backpressure).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from models.base import Encoded
from worker.checkpoint import Partition
from worker.consumer import Record
from worker.schema import DeadLetter, Post, SourceRef, Verdict

T = TypeVar("T")


class Board:
    """The lock and condition every channel of one worker shares."""

    def __init__(self) -> None:
        self.cond = threading.Condition()

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def wait(self, until: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``until()`` holds (checked under the lock) or ``timeout`` passes."""
        with self.cond:
            return self.cond.wait_for(until, timeout)


class Channel(Generic[T]):
    """A FIFO between two stages; ``capacity`` is advisory (see the module docstring)."""

    def __init__(self, board: Board, capacity: int | None = None) -> None:
        self._board = board
        self._items: deque[T] = deque()
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self._items)

    def has_room(self) -> bool:
        return self.capacity is None or len(self._items) < self.capacity

    def put(self, item: T) -> None:
        with self._board.cond:
            self._items.append(item)
            self._board.cond.notify_all()

    def take(self) -> T | None:
        with self._board.cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._board.cond.notify_all()
            return item

    def take_while(self, fits: Callable[[T], bool]) -> list[T]:
        """Items from the front for as long as ``fits`` (called under the lock) accepts them."""
        with self._board.cond:
            items = []
            while self._items and fits(self._items[0]):
                items.append(self._items.popleft())
            if items:
                self._board.cond.notify_all()
            return items

    def take_all(self) -> list[T]:
        with self._board.cond:
            items = list(self._items)
            self._items.clear()
            if items:
                self._board.cond.notify_all()
            return items


class Generations:
    """A number per partition, bumped when the partition is revoked.

    Work carries the generation its record was polled in; once the partition is revoked,
    every stage recognises that work as stale and drops it, and its late acknowledgement is
    ignored, even if the partition has come back since. Written by the main thread only;
    read by every stage (a dict lookup is atomic under the GIL).
    """

    def __init__(self) -> None:
        self._current: dict[Partition, int] = {}
        self.version = 0  # bumped on every change: stages rescan their buffers only then

    def current(self, tp: Partition) -> int:
        return self._current.get(tp, 0)

    def bump(self, partitions: Iterable[Partition]) -> None:
        for tp in partitions:
            self._current[tp] = self._current.get(tp, 0) + 1
        self.version += 1

    def live(self, ref: Ref) -> bool:
        """True unless the record's partition was revoked since ``ref`` was polled."""
        return self._current.get(ref.tp, 0) == ref.generation


@dataclass(frozen=True, slots=True)
class Ref:
    """A polled record's place, its generation and when it was polled."""

    source: SourceRef
    generation: int
    polled_at: float

    @property
    def tp(self) -> Partition:
        return Partition(self.source.topic, self.source.partition)


@dataclass(frozen=True, slots=True)
class Item:
    """A decoded post on its way to the tokeniser."""

    post: Post
    record: Record
    ref: Ref


@dataclass(frozen=True, slots=True)
class Prepared:
    """A post with its token ids: what the batcher groups and the model scores.
    ``model_version``: the model that tokenised it (after a hot-swap, the model stage
    re-tokenises a post whose version is not the one it scores with)."""

    item: Item
    encoded: Encoded
    model_version: str


Result = Verdict | DeadLetter


@dataclass(slots=True)
class WriteJob:
    """Results for the writer: each with the record it settles (verdicts from the model
    stage, dead letters from decoding or tokenising)."""

    entries: list[tuple[Ref, Result]]
    acked: set[str] = field(default_factory=set)  # sinks that already hold this job
    attempts: int = 0
    retry_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Completed:
    """Every sink acknowledged these records' results: the main thread may mark them done."""

    refs: list[Ref]
