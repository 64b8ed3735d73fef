"""The run loop. One :meth:`Worker.step` is the whole data flow:

    poll -> decode (dead letters out) -> batch -> classify -> write sinks -> commit

Offsets advance only to the last record whose verdict or dead letter every sink has
acknowledged. A signal only sets a flag: the loop stops polling, drains the batch in hand
within the grace time, commits what is safe, and returns.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from kafka.errors import KafkaError

from worker import metrics
from worker.batcher import MicroBatcher
from worker.checkpoint import OffsetTracker, Partition
from worker.consumer import Record
from worker.pipeline import Pipeline
from worker.schema import DeadLetter, DeadLetterReason, Post, SourceRef, Verdict, decode
from worker.sinks import Sink, SinkError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Consumer(Protocol):
    """What the loop needs from the input side (an in-memory fake in unit tests)."""

    def subscribe(
        self,
        on_revoked: Callable[[set[Partition]], None],
        on_assigned: Callable[[set[Partition]], None],
    ) -> None: ...
    def poll(self, timeout_ms: int, max_records: int) -> list[Record]: ...
    def commit(self, offsets: dict[Partition, int]) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    @property
    def paused(self) -> bool: ...
    def lag(self, positions: dict[Partition, int]) -> dict[Partition, int]: ...
    def rewind(self, offsets: dict[Partition, int]) -> None: ...


@dataclass(frozen=True, slots=True)
class Item:
    """A decoded post on its way through the batcher."""

    post: Post
    record: Record
    polled_at: float


@dataclass(frozen=True, slots=True)
class LoopConfig:
    poll_timeout_ms: int = 100
    max_poll_records: int = 500
    max_pending: int = 5000
    max_event_bytes: int = 64 * 1024
    shutdown_grace_s: float = 20.0
    lag_interval_s: float = 2.0
    retry_backoff_s: tuple[float, float] = (0.1, 5.0)


class Worker:
    def __init__(
        self,
        consumer: Consumer,
        batcher: MicroBatcher[Item],
        pipeline: Pipeline,
        verdict_sinks: Sequence[Sink[Verdict]],
        dead_letter_sink: Sink[DeadLetter],
        config: LoopConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._consumer = consumer
        self._batcher = batcher
        self._pipeline = pipeline
        self._verdict_sinks = list(verdict_sinks)
        self._dead_letters = dead_letter_sink
        self._cfg = config
        self._clock = clock
        self._sleep = sleep
        self._tracker = OffsetTracker()
        self._positions: dict[Partition, int] = {}
        self._stop_requested = False
        self._abandon_at: float | None = None
        self._next_lag_at = 0.0
        self.last_step_at = clock()
        self.assigned: set[Partition] = set()
        self._rewind_to: dict[Partition, int] = {}
        self._rebalances: queue.SimpleQueue[tuple[str, set[Partition]]] = queue.SimpleQueue()

    # --- lifecycle -------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Called from a signal handler: only flips a flag."""
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def run(self) -> None:
        """Consume until asked to stop, then drain within the grace time."""
        self._consumer.subscribe(self._on_revoked, self._on_assigned)
        while not self._stop_requested:
            self.step()
        self.drain()

    def drain(self) -> None:
        """Finish the batches in hand within the grace time; commit what is done."""
        self._apply_rebalances()
        self._abandon_at = self._clock() + self._cfg.shutdown_grace_s
        while len(self._batcher) and self._clock() < self._abandon_at:
            self._process(self._batcher.take())
        self._commit()
        if len(self._batcher):
            log.warning(
                "grace time over: %d posts left uncommitted for redelivery", len(self._batcher)
            )

    # --- the step --------------------------------------------------------------------------
    def step(self) -> None:
        records = self._consumer.poll(self._poll_timeout_ms(), self._cfg.max_poll_records)
        self._apply_rebalances()
        letters = self._accept(records)
        if self._write(self._dead_letters, letters):  # False only when abandoned at shutdown
            for letter in letters:
                self._finish(letter.source)
                metrics.DEAD_LETTERS.labels(letter.reason.value).inc()
        if self._batcher.ready():
            self._process(self._batcher.take())
        self._commit()
        self._backpressure()
        self._observe()

    def _poll_timeout_ms(self) -> int:
        """Wait for records only while no batch is due: a full batch must not idle in poll."""
        if self._batcher.ready():
            return 0
        left = self._batcher.time_left()
        if left is None:
            return self._cfg.poll_timeout_ms
        return max(0, min(self._cfg.poll_timeout_ms, int(left * 1000)))

    def _accept(self, records: list[Record]) -> list[DeadLetter]:
        """Track and decode polled records: posts go to the batcher, the rest are returned."""
        now = self._clock()
        letters: list[DeadLetter] = []
        for record in records:
            self._tracker.track(record.tp, record.offset)
            self._positions[record.tp] = record.offset + 1
            metrics.EVENTS_CONSUMED.labels(record.topic).inc()
            source = SourceRef(record.topic, record.partition, record.offset, record.timestamp_ms)
            decoded = decode(
                record.key,
                record.value,
                source,
                max_event_bytes=self._cfg.max_event_bytes,
                headers=record.headers,
            )
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                self._batcher.add(Item(decoded, record, now))
        return letters

    def _process(self, batch: list[Item]) -> None:
        """Classify one micro-batch, write its results everywhere, mark its offsets done."""
        if not batch:
            return
        metrics.BATCH_SIZE.observe(len(batch))  # here, not in _classify: retries are not batches
        verdicts, letters = self._classify(batch)
        if not self._write(self._dead_letters, letters):
            return
        for sink in self._verdict_sinks:
            if not self._write(sink, verdicts):
                return  # abandoned at shutdown: not committed, so redelivered
        now_wall = datetime.now(UTC)
        now = self._clock()
        for item in batch:
            self._finish(item.post.source)
            metrics.PROCESSING_SECONDS.observe(now - item.polled_at)
        for verdict in verdicts:
            metrics.VERDICTS.labels(verdict.action.value).inc()
            latency = (now_wall - verdict.event_time).total_seconds()
            metrics.END_TO_END_SECONDS.observe(max(0.0, latency))
        for letter in letters:
            metrics.DEAD_LETTERS.labels(letter.reason.value).inc()

    def _classify(self, batch: list[Item]) -> tuple[list[Verdict], list[DeadLetter]]:
        """One forward pass; if it fails, retry post by post so one bad post cannot hold
        back the rest, and dead-letter the posts that still fail."""
        started = time.perf_counter()
        try:
            verdicts = self._pipeline.classify([i.post for i in batch])
            metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
            return verdicts, []
        except Exception as exc:
            metrics.ERRORS.labels("model").inc()
            if len(batch) == 1:
                item = batch[0]
                log.exception("model failed on post %s", item.post.event.post_id)
                letter = DeadLetter(
                    DeadLetterReason.MODEL_ERROR,
                    f"{type(exc).__name__}: {exc}"[:500],
                    item.post.source,
                    item.record.key,
                    item.record.value,
                    item.record.headers,
                )
                return [], [letter]
            log.warning("model failed on a batch of %d (%r); retrying one by one", len(batch), exc)
        verdicts, letters = [], []
        for item in batch:
            v, d = self._classify([item])
            verdicts += v
            letters += d
        return verdicts, letters

    def _write(self, sink: Sink[T], items: Sequence[T]) -> bool:
        """Write until acknowledged, backing off between tries. Gives up (returns False)
        only once shutdown's grace time has run out."""
        if not items:
            return True
        delay, longest = self._cfg.retry_backoff_s
        while True:
            started = time.perf_counter()
            try:
                sink.write_batch(items)
            except SinkError as exc:
                stage = {"redis": "redis", "kafka": "kafka_produce"}.get(sink.name, sink.name)
                metrics.ERRORS.labels(stage).inc()
                log.warning("%s; retrying in %.1fs", exc, delay)
            else:
                if sink.name in ("redis", "kafka"):
                    metrics.SINK_WRITE_SECONDS.labels(sink.name).observe(
                        time.perf_counter() - started
                    )
                return True
            if self._abandon_at is not None and self._clock() >= self._abandon_at:
                return False
            if self._stop_requested and self._abandon_at is None:
                self._abandon_at = self._clock() + self._cfg.shutdown_grace_s
            self._sleep(delay)
            delay = min(longest, delay * 2)

    def _finish(self, source: SourceRef) -> None:
        self._tracker.done(Partition(source.topic, source.partition), source.offset)

    def _commit(self, only: set[Partition] | None = None) -> None:
        offsets = self._tracker.committable()
        if only is not None:
            offsets = {tp: off for tp, off in offsets.items() if tp in only}
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            metrics.ERRORS.labels("commit").inc()
            log.warning("offset commit failed (%r); will retry", exc)
            return
        self._tracker.mark_committed(offsets)
        metrics.COMMITS.inc()

    def _backpressure(self) -> None:
        """A batcher that falls behind pauses fetching instead of growing memory."""
        pending = len(self._batcher)
        if pending >= self._cfg.max_pending and not self._consumer.paused:
            self._consumer.pause()
            metrics.PAUSED.set(1)
        elif pending <= self._cfg.max_pending // 2 and self._consumer.paused:
            self._consumer.resume()
            metrics.PAUSED.set(0)

    def _observe(self) -> None:
        now = self._clock()
        self.last_step_at = now
        metrics.PENDING_RECORDS.set(self._tracker.in_flight())
        if now >= self._next_lag_at:
            self._next_lag_at = now + self._cfg.lag_interval_s
            for tp, lag in self._consumer.lag(self._positions).items():
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)

    # --- rebalancing -----------------------------------------------------------------------
    # kafka-python 3 calls the rebalance listener on its IO thread, which also drives
    # heartbeats and commits: the callbacks only queue the change, and the loop applies it
    # right after poll, on its own thread. A commit from the callback itself would wait on
    # the very thread it blocks.
    def _on_revoked(self, revoked: set[Partition]) -> None:
        self._rebalances.put(("revoked", set(revoked)))

    def _on_assigned(self, assigned: set[Partition]) -> None:
        self._rebalances.put(("assigned", set(assigned)))

    def _apply_rebalances(self) -> None:
        while True:
            try:
                kind, partitions = self._rebalances.get_nowait()
            except queue.Empty:
                return
            if kind == "revoked":
                self._revoke(partitions)
            else:
                self._assign(partitions)

    def _revoke(self, revoked: set[Partition]) -> None:
        """Commit what is done for the revoked partitions and drop what is not: the next
        owner starts from the committed offset, so nothing is lost (at worst redone)."""
        self._commit(only=revoked)
        # Where to read again if a partition comes straight back to this member: its fetch
        # position is past the records dropped here, and they must not be skipped.
        self._rewind_to = {
            tp: off for tp in revoked if (off := self._tracker.first_unfinished(tp)) is not None
        }
        dropped = self._batcher.drop(lambda item: item.record.tp not in revoked)
        self._tracker.forget(revoked)
        for tp in revoked:
            self._positions.pop(tp, None)
            try:
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
        self.assigned -= revoked
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        log.info(
            "partitions revoked: %s (%d unfinished posts left for the next owner)",
            sorted(revoked),
            len(dropped),
        )

    def _assign(self, assigned: set[Partition]) -> None:
        self._consumer.rewind({tp: off for tp, off in self._rewind_to.items() if tp in assigned})
        self._rewind_to = {}
        self.assigned |= assigned
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        if self._consumer.paused:  # newly assigned partitions start unpaused
            self._consumer.resume()
            self._consumer.pause()
        log.info("partitions assigned: %s", sorted(assigned))
