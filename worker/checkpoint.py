"""Offset tracking (which offsets are safe to commit) and the checkpoint that commits them.

Kafka commits one offset per partition: "everything before this is done". A record is
*done* once its verdict (or dead letter) is acknowledged by every sink. The committable
offset of a partition is therefore the first offset that is not done yet, so a record
still in flight is never skipped, whatever order batches finish in.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from kafka.errors import KafkaError

from worker import metrics

log = logging.getLogger(__name__)


class Partition(NamedTuple):
    topic: str
    partition: int


class OffsetOrderError(RuntimeError):
    """A partition's offset was tracked at or below one tracked before it, with no
    revocation or abort between. The done prefix follows the order offsets were tracked in,
    so the lower one could be committed past: the worker stops instead (the next start
    reads from the committed offset, so nothing is lost)."""


class OffsetTracker:
    """Per partition: offsets handed out, offsets done, and what was last committed."""

    def __init__(self) -> None:
        # offset -> done, in poll order. OrderedDict: taking from the front stays O(1) after
        # many deletions, which a plain dict's iteration does not guarantee.
        self._pending: dict[Partition, OrderedDict[int, bool]] = {}
        self._next: dict[Partition, int] = {}  # next offset to commit, once done
        self._committed: dict[Partition, int] = {}
        self._last: dict[Partition, int] = {}  # the last offset tracked, since forget/discard

    def track(self, tp: Partition, offset: int) -> None:
        """A record was polled and is now in flight. A partition's offsets must rise until
        it is forgotten or discarded (a seek back comes only after one of them): raises
        :class:`OffsetOrderError` otherwise, rather than commit past the lower offset."""
        last = self._last.get(tp)
        if last is not None and offset <= last:
            raise OffsetOrderError(
                f"{tp.topic}[{tp.partition}]: offset {offset} tracked after {last} with no "
                "revocation or abort between; stopping rather than commit past it"
            )
        self._last[tp] = offset
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

    def committed(self) -> dict[Partition, int]:
        """The offsets last committed, per partition still assigned."""
        return dict(self._committed)

    def discard(self, partitions: Iterable[Partition]) -> None:
        """Drop what was handed out and not committed (an aborted transaction): those
        records will be read again from the committed offset."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._last.pop(tp, None)
            if tp in self._committed:
                self._next[tp] = self._committed[tp]
            else:
                self._next.pop(tp, None)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """The partitions were revoked: whatever is still in flight will be redelivered."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._last.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)


class Committer(Protocol):
    def commit(self, offsets: dict[Partition, int], timeout_s: float | None = None) -> None:
        """Synchronously commit "everything before offset is done" per partition, within
        ``timeout_s`` where the committer can bound it."""


class Checkpoint:
    """The one place that turns "every sink acknowledged" into a commit.

    1. The writer stage waits until every sink has acknowledged a batch's results, and only
       then reports its records (:class:`worker.flow.Completed`); the main thread marks
       them done here with :meth:`done`.
    2. :meth:`commit` commits, per partition, the offset after the done prefix: a record
       still in flight is never skipped, whatever order batches finish in.

    In exactly-once mode the loop commits through :class:`worker.transactions.Transactions`
    at a barrier instead (``send_offsets_to_transaction`` + ``commit_transaction``), with
    the same tracker.
    Called from the main thread only (the consumer is not thread-safe).
    """

    def __init__(self, committer: Committer, tracker: OffsetTracker | None = None) -> None:
        self._committer = committer
        self.tracker = tracker or OffsetTracker()

    def done(self, tp: Partition, offset: int) -> bool:
        return self.tracker.done(tp, offset)

    def commit(self, only: set[Partition] | None = None, timeout_s: float | None = None) -> bool:
        """Commit what moved, within ``timeout_s`` (None: the committer's own bound); False
        when the commit failed (retried on the next call)."""
        offsets = self.tracker.committable()
        if only is not None:
            offsets = {tp: off for tp, off in offsets.items() if tp in only}
        if not offsets:
            return True
        started = time.perf_counter()
        try:
            self._committer.commit(offsets, timeout_s)
        except KafkaError as exc:
            metrics.ERRORS.labels("commit").inc()
            log.warning("offset commit failed (%r); will retry", exc)
            return False
        finally:
            metrics.STAGE_SECONDS.labels("commit").observe(time.perf_counter() - started)
        self.tracker.mark_committed(offsets)
        metrics.COMMITS.inc()
        return True
