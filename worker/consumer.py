"""The input side: a consumer group member with manual commits, pause/resume and lag."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from worker import metrics
from worker.checkpoint import Partition

log = logging.getLogger(__name__)

_LAG_TIMEOUT_MS = 2000  # lag requests run on the main loop: bounded


@dataclass(frozen=True, slots=True)
class Record:
    """The parts of a Kafka record the worker uses."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]  # Kafka allows a header without a value

    @property
    def tp(self) -> Partition:
        return Partition(self.topic, self.partition)


class Consumer(Protocol):
    """What the loop needs from the input side (an in-memory fake in unit tests).

    Every method is called from the main loop's thread only: kafka-python's consumer is not
    thread-safe. ``poll`` blocks up to ``timeout_ms``; ``commit`` blocks for one round trip
    to the group coordinator; the rest return at once. The rebalance callbacks given to
    ``subscribe`` may run on the client's own thread: they must only queue the change.
    A bounded input (a replay of a range that ends) is another implementation of this
    protocol, driven by the same loop.
    """

    def subscribe(
        self,
        on_revoked: Callable[[set[Partition]], None],
        on_assigned: Callable[[set[Partition]], None],
    ) -> None: ...
    def poll(self, timeout_ms: int, max_records: int) -> list[Record]: ...
    def commit(self, offsets: dict[Partition, int], timeout_s: float | None = None) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    @property
    def paused(self) -> bool: ...
    def lag(self, positions: dict[Partition, int]) -> dict[Partition, int]: ...
    def rewind(self, offsets: dict[Partition, int]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        on_revoked: Callable[[set[Partition]], None],
        on_assigned: Callable[[set[Partition]], None],
    ) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._on_revoked({Partition(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._on_assigned({Partition(tp.topic, tp.partition) for tp in assigned})


class InputConsumer:
    """Thin wrapper over :class:`KafkaConsumer` that speaks :class:`Record` and
    :class:`Partition`, so the loop never touches kafka-python types."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        topic: str,
        auto_offset_reset: str = "earliest",
        *,
        commit_timeout_s: float,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._reset = auto_offset_reset
        self._commit_timeout_s = commit_timeout_s
        self._paused = False

    def subscribe(
        self,
        on_revoked: Callable[[set[Partition]], None],
        on_assigned: Callable[[set[Partition]], None],
    ) -> None:
        self._consumer.subscribe([self._topic], listener=_Listener(on_revoked, on_assigned))
        # Fetch the topic's partitions now, before the first poll joins the group: a member
        # that joins without them is assigned nothing and rejoins as soon as they arrive,
        # and kafka-python 3.0.12 can lose that second join's result when a poll's timeout
        # ends while it is in flight (the member then sits with no partitions and no
        # heartbeat). With the partitions known, the first assignment is the real one.
        self._consumer.partitions_for_topic(self._topic)

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        """The records of one poll. A fetch error kafka-python marks retriable (a broker
        moving, a leader changing) is counted under ``stage="consume"`` and polled again
        (nothing was returned, so nothing is lost); any other (an authorisation refused, a
        corrupt record) is counted and raised: the worker stops, and a restart reads again
        from the committed offsets."""
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            metrics.ERRORS.labels("consume").inc()
            if not exc.retriable:
                raise
            log.warning("polling %s failed, polling again: %r", self._topic, exc)
            return []
        return [
            Record(
                r.topic,
                r.partition,
                r.offset,
                r.timestamp,
                r.key,
                r.value,
                list(r.headers or []),
            )
            for records in batches.values()
            for r in records
        ]

    def commit(self, offsets: dict[Partition, int], timeout_s: float | None = None) -> None:
        """Synchronously commit "everything before offset is done" per partition, within
        ``timeout_s`` (at most the consumer's ``commit_timeout_s``); past it the commit
        raises KafkaTimeoutError. kafka-python's own bound is its request timeout, 305 s:
        with the broker down, a commit held the loop that long, SIGTERM's grace included."""
        if offsets:
            bound = (
                self._commit_timeout_s
                if timeout_s is None
                else min(timeout_s, self._commit_timeout_s)
            )
            self._consumer.commit(
                {
                    TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(off, "", -1)
                    for tp, off in offsets.items()
                },
                timeout_ms=max(1, int(bound * 1000)),
            )

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop fetching (backpressure) while staying in the group."""
        if not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._consumer.resume(*self._consumer.paused())
            self._paused = False

    def rewind(self, offsets: dict[Partition, int]) -> None:
        """Move fetch positions back to ``offsets`` (a local seek, no request)."""
        assigned = self._consumer.assignment()
        for p, offset in offsets.items():
            tp = TopicPartition(p.topic, p.partition)
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def assignment(self) -> set[Partition]:
        return {Partition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def lag(self, positions: dict[Partition, int]) -> dict[Partition, int]:
        """Per assigned partition, the broker's view: log-end offset minus the group's
        committed offset (what is left to do if this member died now). It asks the broker
        (one ListOffsets and one OffsetFetch per partition, bounded), so it stays right while
        consumption is paused, when no fetch brings new high watermarks. Falls back to the
        last fetched high watermark minus ``positions`` if the broker does not answer."""
        assigned = sorted(self._consumer.assignment())
        if not assigned:
            return {}
        try:
            ends = self._consumer.end_offsets(assigned, timeout_ms=_LAG_TIMEOUT_MS)
            committed = {
                tp: self._consumer.committed(tp, timeout_ms=_LAG_TIMEOUT_MS) for tp in assigned
            }
            missing = [tp for tp, off in committed.items() if off is None]
            if missing:  # never committed: everything from the log start is left
                starts = self._consumer.beginning_offsets(missing, timeout_ms=_LAG_TIMEOUT_MS)
                committed.update({tp: starts.get(tp) for tp in missing})
        except KafkaError as exc:
            log.debug("lag from the broker failed (%r); using the last fetch", exc)
            return self._fetched_lag(assigned, positions)
        return {
            Partition(tp.topic, tp.partition): max(0, ends[tp] - (committed[tp] or 0))
            for tp in assigned
            if tp in ends
        }

    def _fetched_lag(
        self, assigned: list[TopicPartition], positions: dict[Partition, int]
    ) -> dict[Partition, int]:
        lags = {}
        for tp in assigned:
            high = self._consumer.highwater(tp)
            p = Partition(tp.topic, tp.partition)
            position = positions.get(p)
            if high is None or position is None:
                continue
            lags[p] = max(0, high - position)
        return lags

    def close(self) -> None:
        self._consumer.close(autocommit=False)
