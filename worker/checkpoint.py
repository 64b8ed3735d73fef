"""Offset tracking: which offsets are safe to commit.

Kafka commits one offset per partition: "everything before this is done". A record is
*done* once its verdict (or dead letter) is acknowledged by every sink. The committable
offset of a partition is therefore the first offset that is not done yet, so a record
still in flight is never skipped, whatever order batches finish in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple


class Partition(NamedTuple):
    topic: str
    partition: int


class OffsetTracker:
    """Per partition: offsets handed out, offsets done, and what was last committed."""

    def __init__(self) -> None:
        # offset -> done, in poll order. OrderedDict: taking from the front stays O(1) after
        # many deletions, which a plain dict's iteration does not guarantee.
        self._pending: dict[Partition, OrderedDict[int, bool]] = {}
        self._next: dict[Partition, int] = {}  # next offset to commit, once done
        self._committed: dict[Partition, int] = {}

    def track(self, tp: Partition, offset: int) -> None:
        """A record was polled and is now in flight."""
        pending = self._pending.setdefault(tp, OrderedDict())
        pending[offset] = False

    def done(self, tp: Partition, offset: int) -> bool:
        """The record's result is acknowledged by all sinks. Returns False for an offset
        that is no longer tracked (its partition was revoked meanwhile)."""
        pending = self._pending.get(tp)
        if pending is None or offset not in pending:
            return False
        pending[offset] = True
        while pending:  # advance over the done prefix
            first = next(iter(pending))
            if not pending[first]:
                break
            pending.popitem(last=False)
            self._next[tp] = first + 1
        return True

    def first_unfinished(self, tp: Partition) -> int | None:
        """The lowest offset of ``tp`` polled but not done, if any."""
        for offset, finished in self._pending.get(tp, {}).items():
            if not finished:
                return offset
        return None

    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def committable(self) -> dict[Partition, int]:
        """Offsets to commit now: those that moved since the last commit."""
        return {
            tp: offset for tp, offset in self._next.items() if self._committed.get(tp) != offset
        }

    def mark_committed(self, offsets: dict[Partition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """The partitions were revoked: whatever is still in flight will be redelivered."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
