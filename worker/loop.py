"""The main loop. One :meth:`Worker.step` is the main thread's whole job:

    poll -> decode (dead letters out) -> track offsets -> hand posts to the stages
         -> take acknowledged results back -> commit (when due) -> backpressure

and the stages (:mod:`worker.stages`, one thread each) do the rest:

    tokenize + batch formation -> model + policy -> sinks (Redis, output topic, dead letters)

Every consumer call (poll, commit, pause/resume, seek, rebalance handling) stays on this
thread: kafka-python's consumer is not thread-safe. Offsets advance only to the last
record whose verdict or dead letter every sink has acknowledged (:class:`Checkpoint`).
A signal only sets a flag: the loop stops polling, lets the stages drain within the grace
time, commits what is safe, and returns, even if a sink hangs.

In exactly-once mode (:mod:`worker.transactions`) the writes go into a Kafka transaction
and the commit happens at a checkpoint barrier instead: fetching
pauses, everything in flight reaches the sinks, and the offsets commit with the
transaction. A failed send or commit, and any rebalance, aborts the transaction and
rewinds to the committed offsets.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kafka.errors import KafkaError

from worker import metrics
from worker.batcher import MicroBatcher
from worker.checkpoint import Checkpoint, Partition
from worker.consumer import Consumer, Record
from worker.flow import Board, Channel, Completed, Generations, Item, Prepared, Ref, WriteJob
from worker.pipeline import Pipeline
from worker.schema import DeadLetter, SourceRef, Verdict, decode
from worker.sinks import Sink
from worker.stages import ModelCrew, ModelStage, StageRunner, TokenizeStage, WriterStage
from worker.transactions import Transactions

log = logging.getLogger(__name__)

__all__ = ["Consumer", "Item", "LoopConfig", "Worker"]

# After SIGTERM a commit may take what is left of the grace time, and the last one at least
# this long: a healthy broker answers in milliseconds, a down one must not hold the exit
# (the Kubernetes manifests leave 15 s past the grace for it, leaving the group and closing).
FINAL_COMMIT_S = 5.0


def running_commit_bound_s(shutdown_grace_s: float) -> float:
    """The longest a commit may block the main thread while the worker runs (the consumer
    caps it further at MODSTREAM_SINK_TIMEOUT_SECONDS). A SIGTERM that arrives during a
    commit to a broker that does not answer is only seen once the commit returns, and the
    grace time counts from the signal: bounded so, that commit ends within the grace
    (never under FINAL_COMMIT_S, which a healthy broker never comes near), and the exit
    stays within the grace and its margin whatever the sink timeout. A commit that times
    out is retried on the next step; nothing is lost."""
    return max(shutdown_grace_s, FINAL_COMMIT_S)


@dataclass(frozen=True, slots=True)
class LoopConfig:
    poll_timeout_ms: int = 100
    max_poll_records: int = 500
    max_pending: int = 5000  # records in flight (polled, not done) before pausing
    max_event_bytes: int = 64 * 1024
    shutdown_grace_s: float = 20.0
    lag_interval_s: float = 5.0  # lag asks the broker: not on every step
    retry_backoff_s: tuple[float, float] = (0.1, 5.0)
    chunk_size: int = 64  # posts per message to the tokeniser
    model_queue: int = 1  # batches formed ahead of the running one
    writer_queue: int = 4  # scored batches waiting for the writer
    model_failure_limit: int = 5  # posts failing alone in a row before the model is broken
    stop_join_s: float = 2.0  # after the grace time, how long to wait for stuck stages
    # How often offsets commit: at-least-once, at most this often (and whenever nothing is
    # in flight); exactly-once, how often the transaction commits.
    commit_interval_s: float = 1.0


class TransactionAbortError(RuntimeError):
    """Exactly-once: the open transaction could not be aborted (the producer fenced, the
    transaction ended under it, or the broker gone): this worker stops, and ``modstream
    run`` starts another in place with a new producer (:class:`worker.app.RestartsInPlace`);
    the broker aborts the transaction on its timeout if it has not already."""


class Worker:
    def __init__(
        self,
        consumer: Consumer,
        batcher: MicroBatcher[Prepared],
        pipeline: Pipeline,
        verdict_sinks: Sequence[Sink[Verdict]],
        dead_letter_sink: Sink[DeadLetter],
        config: LoopConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        threaded: bool = True,
        transactions: Transactions | None = None,
    ) -> None:
        self._consumer = consumer
        self._cfg = config
        self._clock = clock
        self._sleep = sleep  # inline mode only: the threaded main loop never sleeps
        self._threaded = threaded
        self._checkpoint = Checkpoint(consumer)
        self._tracker = self._checkpoint.tracker
        self._generations = Generations()
        self._board = Board()
        self._to_tokenize: Channel[list[Item]] = Channel(self._board)
        self._to_model: Channel[list[Prepared]] = Channel(self._board, config.model_queue)
        self._to_writer: Channel[WriteJob] = Channel(self._board, config.writer_queue)
        self._completed: Channel[Completed] = Channel(self._board)
        # One replica per model call that may run at once (the model's concurrency).
        self._crew = ModelCrew(max(1, pipeline.model.concurrency))
        metrics.MODEL_REPLICAS.set(self._crew.replicas)
        self._replicas = [
            ModelStage(
                pipeline,
                self._board,
                self._to_model,
                self._to_writer,
                self._generations,
                config.model_failure_limit,
                self._crew,
            )
            for _ in range(self._crew.replicas)
        ]
        self._tokenizer = TokenizeStage(
            lambda: pipeline.model,
            batcher,
            self._to_tokenize,
            self._to_model,
            self._to_writer,
            self._generations,
            self._crew.idle,
        )
        self._writer = WriterStage(
            verdict_sinks,
            dead_letter_sink,
            self._to_writer,
            self._completed,
            self._generations,
            clock,
            config.retry_backoff_s,
            transactions,
        )
        self.stages = StageRunner(
            self._board, [self._tokenizer, *self._replicas, self._writer], threaded=threaded
        )
        self._positions: dict[Partition, int] = {}
        self._stop_requested = False
        self._stop_requested_at: float | None = None  # the grace time counts from here
        self._commit_bound_s = running_commit_bound_s(config.shutdown_grace_s)
        self._next_lag_at = 0.0
        self.last_step_at = clock()
        self.assigned: set[Partition] = set()
        self._rewind_to: dict[Partition, int] = {}
        self._rebalances: queue.SimpleQueue[tuple[str, set[Partition]]] = queue.SimpleQueue()
        # Exactly-once only: the open transaction, whether a barrier is on, when the next
        # one starts, and per partition the first offset handed out since the last commit.
        self._txn = transactions
        self._barrier = False
        self._next_txn_at = clock() + config.commit_interval_s
        self._txn_from: dict[Partition, int] = {}
        self._next_commit_at = clock()  # at-least-once: the first commit goes at once

    # --- lifecycle -------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Called from a signal handler: only flips a flag (and notes when, the first time:
        the grace time counts from the signal, not from when the main thread sees it)."""
        if self._stop_requested_at is None:
            self._stop_requested_at = self._clock()
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped a stage (and so the worker), if any."""
        return self.stages.failure

    def committed(self) -> dict[Partition, int]:
        """What this worker has committed, per partition it holds (any thread may ask)."""
        return self._tracker.committed()

    def alive(self, stale_after_s: float) -> bool:
        return self.failed is None and self._clock() - self.last_step_at < stale_after_s

    def ready(self, stale_after_s: float) -> bool:
        return not self._stop_requested and self.alive(stale_after_s)

    def run(self, input_ended: Callable[[], bool] | None = None) -> None:
        """Consume until asked to stop (or a stage fails), then drain within the grace time.
        Re-raises a stage's failure once what was acknowledged is committed.
        ``input_ended``: a bounded input (a replay) says it has handed out its last record;
        the loop then ends as soon as everything handed out is committed."""
        self._consumer.subscribe(self._on_revoked, self._on_assigned)
        self.stages.start()
        try:
            while not self._stop_requested and self.failed is None:
                if input_ended is not None and input_ended() and not self._tracker.in_flight():
                    break
                self.step()
            self.drain()
        finally:
            self.stages.stop(self._cfg.stop_join_s)
        if self.failed is not None:
            raise self.failed

    def drain(self) -> None:
        """Let the stages finish what is in flight within the grace time (counted from the
        stop request, else from now); commit what is done. Whatever is left is not
        committed, so it is redelivered."""
        self._apply_rebalances()
        since = self._stop_requested_at if self._stop_requested_at is not None else self._clock()
        deadline = since + self._cfg.shutdown_grace_s
        self._tokenizer.flushing = True
        self._board.notify()

        def commit(last: bool) -> None:
            # A broker that does not answer must not hold the exit: a commit within the
            # grace time ends with it, and the last one takes at most FINAL_COMMIT_S past it.
            left = deadline - self._clock()
            if last or left > 0:
                self._checkpoint.commit(timeout_s=max(left, FINAL_COMMIT_S) if last else left)

        while self._tracker.in_flight() and self.failed is None:
            left = deadline - self._clock()
            if left <= 0:
                break
            self._wait_for_completions(min(0.1, left))
            self._settle()
            if self._txn is None:
                commit(last=False)
        self.stages.stop(self._cfg.stop_join_s if self._tracker.in_flight() else 0.5)
        self._settle()
        if self._txn is None:
            commit(last=True)
        else:
            self._end_transaction_at_exit(max(deadline - self._clock(), FINAL_COMMIT_S))
        if self._tracker.in_flight():
            log.warning(
                "grace time over: %d records left uncommitted for redelivery",
                self._tracker.in_flight(),
            )

    def _wait_for_completions(self, timeout: float) -> None:
        if self._threaded:
            self._board.wait(lambda: len(self._completed) > 0 or self.failed is not None, timeout)
        elif not self.stages.run_inline():
            self._sleep(timeout)  # inline (tests): let the injected clock move on

    # --- the step --------------------------------------------------------------------------
    def step(self) -> None:
        records = self._poll()
        records = self._apply_rebalances(records)  # drops what a rebalance made stale
        self._accept(records)
        if not self._threaded:
            self.stages.run_inline()
        self._settle()
        if self._txn is None:
            self._commit_when_due()
        else:
            self._transaction_step()
        self._backpressure()
        self._observe()

    def _poll(self) -> list[Record]:
        """While paused, poll without waiting (it keeps the group membership and rebalance
        callbacks going) and wait for acknowledgements instead."""
        if not self._consumer.paused:
            return self._consumer.poll(self._cfg.poll_timeout_ms, self._cfg.max_poll_records)
        records = self._consumer.poll(0, self._cfg.max_poll_records)
        if self._threaded:
            timeout = self._cfg.poll_timeout_ms / 1000
            self._board.wait(lambda: len(self._completed) > 0, timeout)
        return records

    def _accept(self, records: list[Record]) -> None:
        """Track and decode polled records: posts go to the tokeniser in chunks, the rest
        straight to the writer as dead letters."""
        now = self._clock()
        letters: list[tuple[Ref, Verdict | DeadLetter]] = []
        items: list[Item] = []
        for record in records:
            tp = record.tp
            self._tracker.track(tp, record.offset)
            if self._txn is not None:
                self._txn_from.setdefault(tp, record.offset)
            self._positions[tp] = record.offset + 1
            source = SourceRef(record.topic, record.partition, record.offset, record.timestamp_ms)
            ref = Ref(source, self._generations.current(tp), now)
            decoded = decode(
                record.key,
                record.value,
                source,
                max_event_bytes=self._cfg.max_event_bytes,
                headers=record.headers,
            )
            if isinstance(decoded, DeadLetter):
                letters.append((ref, decoded))
            else:
                items.append(Item(decoded, record, ref))
        # Counted per poll, not per record: a labelled counter's increment is a lookup and
        # an add under locks, 3.6 us each on the development machine.
        for topic, count in Counter(record.topic for record in records).items():
            metrics.EVENTS_CONSUMED.labels(topic).inc(count)
        if letters:
            self._to_writer.put(WriteJob(letters))
        size = self._cfg.chunk_size
        for start in range(0, len(items), size):
            self._to_tokenize.put(items[start : start + size])

    def _commit_when_due(self) -> None:
        """At-least-once: commit what every sink acknowledged once the commit interval is
        up, or at once when nothing is in flight (a quiet topic, the end of a backlog or a
        replay). From a backlog, a commit on every step was 8 commits a second, each a round
        trip on this thread and a write to ``__consumer_offsets`` (Kafka's own consumers
        commit every 5 s by default); a crash redoes at most an interval's work. A failed
        commit is retried on the next step."""
        now = self._clock()
        if now < self._next_commit_at and self._tracker.in_flight():
            return
        if self._tracker.committable() and self._checkpoint.commit(timeout_s=self._commit_bound_s):
            self._next_commit_at = now + self._cfg.commit_interval_s

    def _settle(self) -> None:
        """Mark done the records every sink acknowledged, unless revoked since polled."""
        for completed in self._completed.take_all():
            for ref in completed.refs:
                if self._generations.live(ref):
                    self._checkpoint.done(ref.tp, ref.source.offset)

    def _backpressure(self) -> None:
        """Too much in flight pauses fetching instead of growing memory; resume below half."""
        if self._barrier:  # the barrier holds fetching paused until its commit
            return
        pending = self._tracker.in_flight()
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
        metrics.STAGE_QUEUE.labels("tokenize").set(len(self._to_tokenize))
        metrics.STAGE_QUEUE.labels("batch").set(len(self._tokenizer.batcher))
        metrics.STAGE_QUEUE.labels("model").set(len(self._to_model))
        metrics.STAGE_QUEUE.labels("sinks").set(len(self._to_writer))
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

    def _apply_rebalances(self, polled: Sequence[Record] = ()) -> list[Record]:
        """Apply the queued rebalances; return the records of ``polled`` still to accept.

        kafka-python runs a rebalance inside ``poll()``, and a partition that stays with (or
        comes straight back to) this member keeps its fetch position: that same poll
        returns its records from past the work dropped here. Accepted, they would be
        tracked ahead of that work's second reading, so their verdicts would commit past it
        (and, exactly-once, be written again with it). So a partition that is revoked,
        given back to be read again, or rewound by the abort, drops this poll's records
        too, and reads again from the lower of its first unfinished offset and theirs."""
        if self._rebalances.empty():  # almost every poll: nothing to look at per record
            return list(polled)
        unread = _first_offsets(polled)
        moved: set[Partition] = set()
        while True:
            try:
                kind, partitions = self._rebalances.get_nowait()
            except queue.Empty:
                break
            if kind == "revoked":
                moved |= self._revoke(partitions, unread)
            else:
                moved |= self._assign(partitions, unread)
        if not moved:
            return list(polled)
        return [record for record in polled if record.tp not in moved]

    def _revoke(self, revoked: set[Partition], unread: Mapping[Partition, int]) -> set[Partition]:
        """Commit what is done for the revoked partitions and discard the rest: the next
        owner starts from the committed offset, so nothing is lost (at worst redone). Work
        of theirs still in a stage is dropped there, and a late acknowledgement ignored.
        Exactly-once: the group has moved on, so the open transaction cannot commit: it is
        aborted, and every partition restarts from its committed offset.
        ``unread``: the first offset per partition of records polled but not yet accepted;
        they are dropped with the rest. Returns the partitions whose records go."""
        if not revoked:  # kafka-python announces an empty revocation before the first join
            return set()
        if self._txn is None:
            self._settle()
            self._checkpoint.commit(only=revoked, timeout_s=self._commit_bound_s)
            # Where to read again if a partition comes straight back to this member: its
            # fetch position is past the records dropped here, and they must not be skipped.
            # Merged, not replaced: a second revocation before the assignment (kafka-python
            # rejoins without assigning when it refuses an assignment) has nothing in
            # flight, and would otherwise forget where the first one's work starts.
            for tp in revoked:
                self._rewind_later(tp, self._tracker.first_unfinished(tp), unread.get(tp))
            moved = set(revoked)
        else:
            # The unread records count as handed out: the abort reads them again with the
            # rest, on the partitions it rewinds and on the revoked ones.
            for tp, off in unread.items():
                if tp in revoked or tp in self._txn_from:
                    self._txn_from[tp] = min(off, self._txn_from.get(tp, off))
            uncommitted = dict(self._txn_from)
            self._abort_transaction("partitions revoked")
            for tp in revoked:
                self._rewind_later(tp, uncommitted.get(tp))
            moved = revoked | uncommitted.keys()
        left = self._tracker.in_flight()
        self._generations.bump(revoked)
        self._tracker.forget(revoked)
        self._board.notify()
        for tp in revoked:
            self._positions.pop(tp, None)
            try:
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
        self.assigned -= revoked
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        log.info(
            "partitions revoked: %s (%d unfinished records left for the next owner)",
            sorted(revoked),
            left - self._tracker.in_flight(),
        )
        return moved

    def _rewind_later(self, tp: Partition, *offsets: int | None) -> None:
        """Remember to read ``tp`` again from the lowest of ``offsets`` (and of what is
        remembered already) if it is assigned back."""
        off = _lowest(*offsets, self._rewind_to.get(tp))
        if off is not None:
            self._rewind_to[tp] = off

    def _assign(self, assigned: set[Partition], unread: Mapping[Partition, int]) -> set[Partition]:
        """Seek a partition that comes back to where its dropped work starts. A join that
        outlasts a poll assigns it in a later poll than the revocation, and that poll's
        records for it come from the position kept meanwhile: they are read again too.
        Returns the partitions whose unread records go."""
        rewind = {
            tp: min(off, unread.get(tp, off))
            for tp, off in self._rewind_to.items()
            if tp in assigned
        }
        self._consumer.rewind(rewind)
        self._rewind_to = {}
        self.assigned |= assigned
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        if self._consumer.paused:  # newly assigned partitions start unpaused
            self._consumer.resume()
            self._consumer.pause()
        log.info("partitions assigned: %s", sorted(assigned))
        return set(rewind)

    # --- exactly-once ----------------------------------------------------------------------
    def _transaction_step(self) -> None:
        """Start a barrier when the interval is up; commit once nothing is in flight."""
        assert self._txn is not None
        if self._txn.broken:
            self._abort_transaction("a send in the transaction failed")
        elif not self._barrier:
            if self._txn_from and self._clock() >= self._next_txn_at:
                self._set_barrier(True)
        elif not self._tracker.in_flight():
            self._commit_transaction()
            self._set_barrier(False)

    def _set_barrier(self, on: bool) -> None:
        """On: stop fetching and let the batcher hand every post to the model at once."""
        self._barrier = on
        self._tokenizer.flushing = on
        if on:
            self._consumer.pause()
        else:
            self._next_txn_at = self._clock() + self._cfg.commit_interval_s
            self._consumer.resume()  # backpressure pauses again if it must
        metrics.PAUSED.set(int(self._consumer.paused))
        self._board.notify()

    def _commit_transaction(self, within_s: float | None = None) -> None:
        """Commit the open transaction with the offsets after everything it holds; the
        commit, and the abort if it fails, each within ``within_s`` (None: each call within
        the sink timeout, as while running: an abort there waits for the writer's attempt
        in hand, since failing it would start the worker again for nothing)."""
        assert self._txn is not None
        # Snapshot the membership before applying queued rebalances: a revocation is
        # queued before the generation changes, so it is either applied here (and aborts)
        # or the snapshot's stale generation makes the broker refuse the commit.
        group = self._txn.group_metadata()
        self._apply_rebalances()
        if not self._txn_from:
            return
        offsets = self._tracker.committable()
        started = time.perf_counter()
        try:
            self._txn.commit(offsets, group, within_s)
        except KafkaError as exc:
            metrics.ERRORS.labels("commit").inc()
            self._abort_transaction(f"commit failed ({exc!r})", within_s)
            return
        finally:
            metrics.STAGE_SECONDS.labels("commit").observe(time.perf_counter() - started)
        self._tracker.mark_committed(offsets)
        self._txn_from.clear()
        metrics.COMMITS.inc()

    def _abort_transaction(self, why: str, within_s: float | None = None) -> None:
        """Drop the work since the last commit everywhere, abort (within ``within_s``, as
        :meth:`_commit_transaction`), read it again."""
        assert self._txn is not None
        rewind = dict(self._txn_from)
        log.warning("aborting the transaction: %s; %d partitions rewind", why, len(rewind))
        self._generations.bump(set(rewind))  # the stages drop that work
        self._tracker.discard(rewind)
        self._board.notify()
        try:
            self._txn.abort(within_s)
        except KafkaError as exc:
            raise TransactionAbortError(f"aborting the transaction failed: {exc!r}") from exc
        self._txn_from.clear()
        self._consumer.rewind(rewind)
        self._positions.update(rewind)
        if self._barrier:
            self._set_barrier(False)

    def _end_transaction_at_exit(self, within_s: float) -> None:
        """Shutdown: commit if everything handed out is written, else abort (redone), within
        ``within_s``: a broker that does not answer must not hold the exit, and one that
        never hears the abort aborts the transaction on its timeout (the next owner's
        producer fences it sooner)."""
        assert self._txn is not None
        try:
            if not self._tracker.in_flight():
                self._commit_transaction(within_s)
            elif self._txn_from:
                self._abort_transaction("stopping with records in flight", within_s)
        except TransactionAbortError as exc:
            log.error("%s: the broker aborts it when it times out", exc)


def _first_offsets(records: Sequence[Record]) -> dict[Partition, int]:
    """The lowest offset per partition among ``records``."""
    first: dict[Partition, int] = {}
    for record in records:
        first[record.tp] = min(record.offset, first.get(record.tp, record.offset))
    return first


def _lowest(*offsets: int | None) -> int | None:
    """The lowest of the offsets that are known, if any."""
    known = [off for off in offsets if off is not None]
    return min(known) if known else None
