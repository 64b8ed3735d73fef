"""A pure, length-aware micro-batcher: no Kafka, no torch, no threads, no sleeping.

Items wait in a window. Each has a size in model rows and tokens (its longest window of
token ids), from the real tokenisation. A batch is released when it is full (``max_size``
items), when the waiting work fills the token budget, when the oldest item has waited
``max_wait_s``, or when the caller says the model is idle (no reason to hold posts back
then). A batch always holds the oldest waiting item (so none waits past ``max_wait_s``
for lack of a batch), filled with the waiting items closest to it in length, as long as
``rows x longest`` stays within ``token_budget`` and the padding share within ``max_padding``
(padding is paid on every row: on a CPU a batch costs its padded tokens, so two batches of
like lengths cost less than one mixed one; the rest wait for the next batch, never past
``max_wait_s``). Where the model rounds a batch's rows up (``rows_padded``: bf16 on a
CPU computes 9 rows as 16), a batch is cut back to the most of its chosen items that need
no filler rows, and the rest wait for the next batch: at a light load a free replica takes
them at once, and two batches of 8 and 1 rows take less time than one of 16.
The clock is injected, so tests drive time by hand.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

# How many batches' worth of the oldest waiting items a batch is chosen from.
LOOKAHEAD = 16


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_size: int
    max_wait_s: float
    token_budget: int
    max_padding: float = 1.0  # most of a batch's padded tokens that may be padding (1: any)

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError("max_size must be at least 1")
        if self.max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        if self.token_budget < 1:
            raise ValueError("token_budget must be at least 1")
        if not 0.0 <= self.max_padding <= 1.0:
            raise ValueError("max_padding must be between 0 and 1")


class Size(NamedTuple):
    """What one item costs a batch: rows it adds, and the length each row is padded to."""

    rows: int
    tokens: int

    @property
    def work(self) -> int:
        """Tokens before padding (a post's rows counted at its longest window)."""
        return self.rows * self.tokens


class _Entry(NamedTuple, Generic[T]):
    seq: int  # arrival order
    item: T
    size: Size
    arrived: float


class MicroBatcher(Generic[T]):
    """Collects items and hands them out in batches that respect :class:`BatchLimits`."""

    def __init__(
        self,
        limits: BatchLimits,
        size: Callable[[T], Size],
        clock: Callable[[], float] = time.monotonic,
        rows_padded: Callable[[int], int] | None = None,
    ) -> None:
        self._limits = limits
        self._size = size
        self._clock = clock
        self._rows_padded = rows_padded
        self._entries: dict[int, _Entry[T]] = {}  # by seq: insertion order is arrival order
        self._seq = itertools.count()
        self._work = 0  # sum of rows x tokens waiting: the unpadded cost

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, item: T) -> None:
        rows, tokens = self._size(item)
        size = Size(max(1, rows), max(1, tokens))
        seq = next(self._seq)
        self._entries[seq] = _Entry(seq, item, size, self._clock())
        self._work += size.work

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.add(item)

    def _oldest(self) -> _Entry[T] | None:
        return next(iter(self._entries.values()), None)

    def time_left(self) -> float | None:
        """Seconds until the oldest item's wait runs out (0 when overdue), None when empty."""
        oldest = self._oldest()
        if oldest is None:
            return None
        return max(0.0, self._limits.max_wait_s - (self._clock() - oldest.arrived))

    def ready(self, idle: bool = False) -> bool:
        """True when a batch should be taken now; ``idle``: the model has nothing to do."""
        if not self._entries:
            return False
        if idle or len(self._entries) >= self._limits.max_size:
            return True
        if self._work >= self._limits.token_budget:
            return True
        left = self.time_left()
        return left is not None and left <= 1e-9  # tolerate float rounding of clock sums

    def take(self) -> list[T]:
        """Remove and return the next batch in arrival order; at least one item if any wait."""
        oldest = self._oldest()
        if oldest is None:
            return []
        anchor = oldest.size.tokens
        # Closest in length to the oldest item first; among equals, the older first. Only
        # the oldest LOOKAHEAD batches' worth are looked at: sorting a deep backlog would
        # cost more than the padding it saves.
        window = itertools.islice(self._entries.values(), 1, LOOKAHEAD * self._limits.max_size)
        candidates = sorted(window, key=lambda e: (abs(e.size.tokens - anchor), e.seq))
        chosen = [oldest]
        rows, longest = oldest.size.rows, oldest.size.tokens
        real = oldest.size.work
        for entry in candidates:
            if len(chosen) >= self._limits.max_size:
                break
            grown = max(longest, entry.size.tokens)
            padded = (rows + entry.size.rows) * grown
            if padded > self._limits.token_budget:
                continue  # a shorter one further down the list may still fit
            grown_real = real + entry.size.work
            if 1.0 - grown_real / padded > self._limits.max_padding:
                continue  # it would pad the batch too much; it waits for a closer match
            chosen.append(entry)
            rows, longest, real = rows + entry.size.rows, grown, grown_real
        chosen = self._without_filler_rows(chosen)
        chosen.sort(key=lambda e: e.seq)
        for entry in chosen:
            del self._entries[entry.seq]
            self._work -= entry.size.work
        return [e.item for e in chosen]

    def _without_filler_rows(self, chosen: list[_Entry[T]]) -> list[_Entry[T]]:
        """The longest head of ``chosen`` (in the order picked: the oldest item, then the
        closest in length) whose rows the model computes as they are; all of ``chosen``
        when no head does (an oldest post of 3 windows)."""
        if self._rows_padded is None:
            return chosen
        rows, keep = 0, 0
        for n, entry in enumerate(chosen, 1):
            rows += entry.size.rows
            if self._rows_padded(rows) == rows:
                keep = n
        return chosen[:keep] if keep else chosen

    def drop(self, keep: Callable[[T], bool]) -> list[T]:
        """Remove the items for which ``keep`` is false (revoked partitions); return them."""
        dropped = [e for e in self._entries.values() if not keep(e.item)]
        for entry in dropped:
            del self._entries[entry.seq]
            self._work -= entry.size.work
        return [e.item for e in dropped]
