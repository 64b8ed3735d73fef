"""The worker's stages after polling, each on its own thread (TEI's shape):

    tokenize (real token counts) + batch formation -> model + policy -> sinks (writer)

joined by :class:`worker.flow.Channel`. The model stage runs as the model's
``concurrency`` replicas, each on its own thread (on the CPU, one-thread calls side by
side). The model channel holds one batch: the next batch forms while the current ones
run, and it forms until a replica is free, the batch is full, or its oldest post has waited
``MODSTREAM_BATCH_MAX_WAIT_MS``. Each stage is a small object
with ``has_work`` / ``wait_s`` / ``work``: :class:`StageRunner` runs it on a thread, or
inline (``run_inline``) so unit tests drive every stage deterministically.

Every stage drops work whose partition was revoked since it was polled
(:class:`worker.flow.Generations`). None of them touches the Kafka consumer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from models.base import Classifier
from worker import metrics
from worker.batcher import MicroBatcher
from worker.flow import Board, Channel, Completed, Generations, Item, Prepared, Ref, WriteJob
from worker.pipeline import Pipeline
from worker.schema import DeadLetter, DeadLetterReason, Verdict
from worker.sinks import Acknowledgement, PermanentSinkError, SendingSink, Sink, SinkError
from worker.transactions import Transactions

log = logging.getLogger(__name__)

# Error stage per sink name (the label values of modstream_errors_total).
SINK_ERROR_STAGE = {"redis": "redis", "kafka": "kafka_produce", "dead_letter": "dead_letter"}


class Stage(Protocol):
    name: str

    def has_work(self) -> bool:
        """True when :meth:`work` would make progress now (called under the board's lock)."""

    def wait_s(self) -> float | None:
        """Longest to sleep before checking again, when a deadline is coming; else None."""

    def work(self) -> bool:
        """Do one unit of work; False when there was nothing to do."""


class ModelBrokenError(RuntimeError):
    """The model fails on every post, not on one bad post: stop instead of dead-lettering."""


class SinkRefusedError(RuntimeError):
    """A sink refused a record for good (:class:`PermanentSinkError`): even a dead letter cut
    to fit, or a verdict. Skipping it would lose the record, and retrying it would stall
    every record behind it for ever, unready and silent; so the worker stops, loudly, and
    commits nothing past it."""


def model_error_letter(item: Item, exc: BaseException) -> tuple[Ref, DeadLetter]:
    letter = DeadLetter(
        DeadLetterReason.MODEL_ERROR,
        f"{type(exc).__name__}: {exc}"[:500],
        item.post.source,
        item.record.key,
        item.record.value,
        item.record.headers,
    )
    return item.ref, letter


class TokenizeStage:
    """Tokenises polled posts (real token counts, off the model's thread) and forms batches.
    ``model`` returns the model serving now (read once per chunk: a hot-swap changes it)."""

    name = "tokenize"

    def __init__(
        self,
        model: Callable[[], Classifier],
        batcher: MicroBatcher[Prepared],
        inbox: Channel[list[Item]],
        outbox: Channel[list[Prepared]],
        letters: Channel[WriteJob],
        generations: Generations,
        model_idle: Callable[[], bool],
    ) -> None:
        self._model = model
        self.batcher = batcher
        self._inbox = inbox
        self._outbox = outbox
        self._letters = letters
        self._generations = generations
        self._model_idle = model_idle
        self._seen_version = generations.version
        self.flushing = False  # set at shutdown: hand every post to the model at once

    def has_work(self) -> bool:
        return len(self._inbox) > 0 or self._due()

    def wait_s(self) -> float | None:
        return self.batcher.time_left() if self._outbox.has_room() else None

    def work(self) -> bool:
        chunk = self._inbox.take()
        if chunk is not None:
            self._tokenize(chunk)
        released = self._release()
        return chunk is not None or released

    def _due(self) -> bool:
        idle = self.flushing or self._model_idle()
        return self._outbox.has_room() and self.batcher.ready(idle=idle)

    def _release(self) -> bool:
        if self._generations.version != self._seen_version:
            self._seen_version = self._generations.version
            self.batcher.drop(lambda p: self._generations.live(p.item.ref))
        if not self._due():
            return False
        self._outbox.put(self.batcher.take())
        return True

    def _tokenize(self, chunk: list[Item]) -> None:
        items = [i for i in chunk if self._generations.live(i.ref)]
        if not items:
            return
        started = time.perf_counter()
        prepared, letters = self._prepare(items)
        metrics.STAGE_SECONDS.labels("tokenize").observe(time.perf_counter() - started)
        self.batcher.extend(prepared)
        if letters:
            self._letters.put(WriteJob(list(letters)))

    def _prepare(self, items: list[Item]) -> tuple[list[Prepared], list[tuple[Ref, DeadLetter]]]:
        """Tokenise; a chunk that fails is retried post by post, and a post that fails on
        its own becomes a dead letter (``model_error``)."""
        try:
            model = self._model()
            encoded = model.prepare([i.post.event.text for i in items])
            if len(encoded) != len(items):
                raise RuntimeError(f"prepare returned {len(encoded)} for {len(items)} posts")
            return [Prepared(i, e, model.version) for i, e in zip(items, encoded, strict=True)], []
        except Exception as exc:
            metrics.ERRORS.labels("tokenize").inc()
            if len(items) == 1:
                log.error("tokenising post %s failed", items[0].post.event.post_id, exc_info=exc)
                return [], [model_error_letter(items[0], exc)]
        prepared: list[Prepared] = []
        letters: list[tuple[Ref, DeadLetter]] = []
        for item in items:
            p, d = self._prepare([item])
            prepared += p
            letters += d
        return prepared, letters


class ModelCrew:
    """What the model stage's replicas share: how many there are, how many are scoring a
    batch now (read and written under the board's lock), and how many posts in a row failed
    alone, across replicas, since a broken model fails on all of them (written by the
    replicas' threads without a lock: a lost update delays the stop by one post at most)."""

    def __init__(self, replicas: int = 1) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.replicas = replicas
        self.busy = 0
        self.failures_in_a_row = 0

    def idle(self) -> bool:
        """True when a replica could take a batch now (the batcher stops waiting to fill)."""
        return self.busy < self.replicas


class ModelStage:
    """One model replica: runs the model on one batch at a time, applies the policy, hands
    results to the writer. ``crew``: what the replicas of one worker share (each replica
    runs on its own thread; the model's ``concurrency`` says how many may).

    A batch that fails is retried post by post, so one bad post cannot hold back the rest;
    a post that fails alone is dead-lettered (``model_error``). But once ``failure_limit``
    posts in a row fail alone (no success in between), the model itself is broken: the
    stage raises :class:`ModelBrokenError` and the worker stops, reports unready and
    commits nothing for the batch in hand, instead of dead-lettering the whole stream.

    A hot-swap waits until no replica is scoring, then applies once: every batch started
    after it uses the new model, every batch before it the old one.
    """

    name = "model"

    def __init__(
        self,
        pipeline: Pipeline,
        board: Board,
        inbox: Channel[list[Prepared]],
        outbox: Channel[WriteJob],
        generations: Generations,
        failure_limit: int = 3,
        crew: ModelCrew | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._board = board
        self._inbox = inbox
        self._outbox = outbox
        self._generations = generations
        self._failure_limit = failure_limit
        self.crew = crew or ModelCrew()

    @property
    def idle(self) -> bool:
        return self.crew.idle()

    def has_work(self) -> bool:
        if self._pipeline.swap_waiting():
            return self.crew.busy == 0  # the swap waits for the batches being scored
        return len(self._inbox) > 0 and self._outbox.has_room()

    def wait_s(self) -> float | None:
        return None

    def work(self) -> bool:
        # A hot-swap takes effect here, between batches, once no replica is scoring: model
        # and policy together. Taking the batch and turning busy are one step for the batcher.
        with self._board.cond:
            swapped = False
            if self._pipeline.swap_waiting():
                if self.crew.busy:
                    return False
                swapped = self._pipeline.apply_swap()
            batch = self._inbox.take() if self._outbox.has_room() else None
            if batch is None:
                return swapped
            self.crew.busy += 1
        try:
            live = [p for p in batch if self._generations.live(p.item.ref)]
            if live:
                self._outbox.put(WriteJob(self._run(live)))
        finally:
            with self._board.cond:
                self.crew.busy -= 1
                self._board.cond.notify_all()
        return True

    def _run(self, batch: list[Prepared]) -> list[tuple[Ref, Verdict | DeadLetter]]:
        started = time.perf_counter()
        encoded = [p.encoded for p in batch]
        # What the model computes: rows x longest, rounded as the model rounds its shapes.
        rows, width = self._pipeline.model.padded_shape(
            sum(e.rows for e in encoded), max(e.tokens for e in encoded)
        )
        padded = rows * width
        real = sum(len(w) for e in encoded for w in e.windows)
        metrics.BATCH_SIZE.observe(len(batch))  # here, not in _score: retries are not batches
        metrics.BATCH_TOKENS.observe(padded)
        metrics.BATCH_PADDING_SHARE.observe(1.0 - real / padded if padded else 0.0)
        entries = self._score(batch)
        metrics.STAGE_SECONDS.labels("model").observe(time.perf_counter() - started)
        return entries

    def _score(self, batch: list[Prepared]) -> list[tuple[Ref, Verdict | DeadLetter]]:
        started = time.perf_counter()
        version = self._pipeline.model.version
        # Tokenised by a model swapped out since: the pipeline tokenises again (None).
        fresh = all(p.model_version == version for p in batch)
        try:
            verdicts = self._pipeline.classify(
                [p.item.post for p in batch], [p.encoded for p in batch] if fresh else None
            )
        except Exception as exc:  # noqa: BLE001 - a model fails in any way; isolated below
            metrics.ERRORS.labels("model").inc()
            if len(batch) > 1:
                log.warning("model failed on a batch of %d (%r); one by one", len(batch), exc)
                return [entry for p in batch for entry in self._score([p])]
            return [self._failed_alone(batch[0].item, exc)]
        self.crew.failures_in_a_row = 0
        metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
        return [(p.item.ref, v) for p, v in zip(batch, verdicts, strict=True)]

    def _failed_alone(self, item: Item, exc: Exception) -> tuple[Ref, DeadLetter]:
        self.crew.failures_in_a_row += 1
        if self.crew.failures_in_a_row >= self._failure_limit:
            metrics.MODEL_HEALTHY.set(0)
            raise ModelBrokenError(
                f"the model failed on {self.crew.failures_in_a_row} posts in a row, each on its "
                f"own ({type(exc).__name__}: {exc}): the model is broken, not the posts"
            ) from exc
        log.error("model failed on post %s", item.post.event.post_id, exc_info=exc)
        return model_error_letter(item, exc)


# The most results the writer merges from waiting jobs into one write (see
# WriterStage._take_merged): a few batches, far under a produce request's size limit.
MERGE_RESULTS = 256


class WriterStage:
    """Writes each job to every sink and reports its records once all acknowledged.

    The Kafka records are appended to the producer's batches first (``send`` returns
    futures), Redis is written, then the producer is flushed and every Kafka ack awaited: a
    job leaves in one produce request (see ``WRITER_PRODUCER`` in ``worker.sinks.kafka``).
    A sink that fails is retried with exponential backoff (a deadline the stage waits for,
    not a sleep in the main loop), only the sinks that have not acknowledged yet; nothing
    after the job is reported meanwhile, so nothing is committed past it, and the main
    thread pauses consumption once too much is in flight.

    :attr:`down` names the sinks whose last write failed (``modstream_sink_up`` 0), until
    one succeeds again; ``/readyz`` is unready meanwhile.

    A sink that refuses a record itself (:class:`PermanentSinkError`: too large, malformed)
    is not retried: the stage raises :class:`SinkRefusedError` once the attempt is over,
    which stops the worker with nothing committed past the job.
    """

    name = "sinks"

    def __init__(
        self,
        verdict_sinks: Sequence[Sink[Verdict]],
        dead_letter_sink: Sink[DeadLetter],
        inbox: Channel[WriteJob],
        outbox: Channel[Completed],
        generations: Generations,
        clock: Callable[[], float] = time.monotonic,
        backoff_s: tuple[float, float] = (0.1, 5.0),
        transactions: Transactions | None = None,
    ) -> None:
        self._verdict_sinks = list(verdict_sinks)
        self._txn = transactions
        self._dead_letters = dead_letter_sink
        self._inbox = inbox
        self._outbox = outbox
        self._generations = generations
        self._clock = clock
        self._backoff = backoff_s
        self.job: WriteJob | None = None  # the job in hand, until every sink acknowledged
        # Replaced, never mutated: the health server's thread reads it.
        self.down: frozenset[str] = frozenset()
        self._down_since: dict[str, float] = {}
        self._refused: PermanentSinkError | None = None  # in the attempt under way

    def has_work(self) -> bool:
        if self.job is None:
            return len(self._inbox) > 0
        return self._clock() >= self.job.retry_at

    def wait_s(self) -> float | None:
        return None if self.job is None else max(0.0, self.job.retry_at - self._clock())

    def work(self) -> bool:
        if self.job is None:
            self.job = self._take_merged()
        job = self.job
        if job is None or self._clock() < job.retry_at:
            return False
        started = time.perf_counter()
        if self._txn is None:
            ok = self._attempt(job)
        else:  # exactly-once: never send while the main thread commits or aborts
            with self._txn.writing():
                ok = self._attempt(job)
                if not {"kafka", "dead_letter"} <= job.acked | self._empty_sinks(job):
                    self._txn.send_failed()  # the transaction can only be aborted now
        metrics.STAGE_SECONDS.labels("sinks").observe(time.perf_counter() - started)
        refused, self._refused = self._refused, None
        if refused is not None:
            raise SinkRefusedError(
                f"{refused}; stopping the worker: retrying cannot help, and skipping would "
                "lose the record. Nothing from this write is committed: the record is read "
                "again once the cause is fixed"
            ) from refused
        if ok:
            self.job = None
            self._complete(job)
        else:
            first, longest = self._backoff
            delay = min(longest, first * 2 ** (job.attempts - 1))
            log.warning("retrying the write of %d results in %.1fs", len(job.entries), delay)
            job.retry_at = self._clock() + delay
        return True

    def _take_merged(self) -> WriteJob | None:
        """The jobs waiting, as one, up to :data:`MERGE_RESULTS` results: when the writer
        falls behind, one Redis call, one flush of the producer and one set of produce
        requests carry several batches, so each post costs the writer less just when it is
        the bottleneck; a writer that keeps up takes one job at a time, as it comes."""
        taken = 0

        def fits(job: WriteJob) -> bool:
            nonlocal taken
            if taken and taken + len(job.entries) > MERGE_RESULTS:
                return False
            taken += len(job.entries)
            return True

        jobs = self._inbox.take_while(fits)
        if len(jobs) <= 1:
            return jobs[0] if jobs else None
        return WriteJob([entry for job in jobs for entry in job.entries])

    def _attempt(self, job: WriteJob) -> bool:
        job.attempts += 1
        job.entries = [e for e in job.entries if self._generations.live(e[0])]
        verdicts = [r for _, r in job.entries if isinstance(r, Verdict)]
        letters = [r for _, r in job.entries if isinstance(r, DeadLetter)]
        plan: list[tuple[Any, Sequence[Any]]] = [
            (self._dead_letters, letters),
            *((s, verdicts) for s in self._verdict_sinks),
        ]
        todo = [(s, items) for s, items in plan if items and s.name not in job.acked]
        sent: list[tuple[Any, Acknowledgement, float]] = []
        for sink, items in todo:  # start the asynchronous sends first
            if isinstance(sink, SendingSink):
                started = time.perf_counter()
                try:
                    sent.append((sink, sink.send_batch(items), started))
                except SinkError as exc:
                    self._failed(sink, exc)
        for sink, items in todo:  # then the blocking writes
            if not isinstance(sink, SendingSink):
                self._settle(job, sink, sink.write_batch, items)
        for sink, ack, started in sent:
            self._settle(job, sink, lambda _: ack.wait(), (), started)  # noqa: B023 - runs now
        return all(s.name in job.acked for s, _ in todo)

    @staticmethod
    def _empty_sinks(job: WriteJob) -> set[str]:
        """The Kafka sinks that had nothing to write in ``job``."""
        empty = set()
        if not any(isinstance(r, Verdict) for _, r in job.entries):
            empty.add("kafka")
        if not any(isinstance(r, DeadLetter) for _, r in job.entries):
            empty.add("dead_letter")
        return empty

    def _settle(
        self,
        job: WriteJob,
        sink: Any,
        call: Callable[[Sequence[Any]], None],
        items: Sequence[Any],
        started: float | None = None,
    ) -> None:
        """Run one blocking sink call; on success the sink holds the job."""
        started = time.perf_counter() if started is None else started
        try:
            call(items)
        except SinkError as exc:
            self._failed(sink, exc)
            return
        job.acked.add(sink.name)
        if sink.name in ("redis", "kafka"):
            metrics.SINK_WRITE_SECONDS.labels(sink.name).observe(time.perf_counter() - started)
        if sink.name in self.down:
            self.down = self.down - {sink.name}
            metrics.SINK_UP.labels(sink.name).set(1)
            down_s = self._clock() - self._down_since.pop(sink.name, self._clock())
            log.warning("sink %s acknowledges again after %.1fs down", sink.name, down_s)

    def _failed(self, sink: Any, exc: SinkError) -> None:
        metrics.ERRORS.labels(SINK_ERROR_STAGE.get(sink.name, sink.name)).inc()
        if isinstance(exc, PermanentSinkError):
            self._refused = self._refused or exc  # raised once the other sinks are done
            return
        log.warning("%s", exc)
        if sink.name not in self.down and sink.name in metrics.SINKS:
            self.down = self.down | {sink.name}
            self._down_since[sink.name] = self._clock()
            metrics.SINK_UP.labels(sink.name).set(0)
            log.warning("sink %s is down: retrying; nothing is committed past it", sink.name)

    def _complete(self, job: WriteJob) -> None:
        now_wall = datetime.now(UTC)
        now = self._clock()
        actions: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for ref, result in job.entries:
            metrics.PROCESSING_SECONDS.observe(max(0.0, now - ref.polled_at))
            if isinstance(result, Verdict):
                actions[result.action.value] += 1
                if result.replay_id is None:  # a replayed post's event time is long past
                    latency = (now_wall - result.event_time).total_seconds()
                    metrics.END_TO_END_SECONDS.observe(max(0.0, latency))
            else:
                reasons[result.reason.value] += 1
        for action, count in actions.items():  # a labelled increment per job, not per post
            metrics.VERDICTS.labels(action).inc(count)
        for reason, count in reasons.items():
            metrics.DEAD_LETTERS.labels(reason).inc(count)
        if job.entries:
            self._outbox.put(Completed([ref for ref, _ in job.entries]))


class StageRunner:
    """Runs stages on daemon threads (or inline, for tests) and stops them within a bound.

    A stage that raises stops the worker: :attr:`failure` holds the error, and the main
    loop drains, commits what is acknowledged and re-raises it.
    """

    def __init__(self, board: Board, stages: Sequence[Stage], *, threaded: bool = True) -> None:
        self._board = board
        self.stages = list(stages)
        self._threaded = threaded
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.failure: BaseException | None = None

    def start(self) -> None:
        if not self._threaded or self._threads:
            return
        for stage in self.stages:
            same = [s for s in self.stages if s.name == stage.name]
            suffix = f"-{same.index(stage)}" if len(same) > 1 else ""
            thread = threading.Thread(
                target=self._loop,
                args=(stage,),
                name=f"modstream-{stage.name}{suffix}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _loop(self, stage: Stage) -> None:
        try:
            while not self._stop.is_set():
                wait = stage.wait_s()
                timeout = 0.5 if wait is None else min(0.5, wait)
                self._board.wait(lambda: self._stop.is_set() or stage.has_work(), timeout)
                if not self._stop.is_set():
                    stage.work()
        except Exception as exc:
            log.exception("stage %s failed; stopping the worker", stage.name)
            metrics.ERRORS.labels("stage").inc()
            self.failure = exc
            self._board.notify()

    def run_inline(self) -> bool:
        """Run every stage until none has work left; True if any did something."""
        any_work = False
        while True:
            try:
                progressed = [stage.work() for stage in self.stages]
            except Exception as exc:
                self.failure = exc
                raise
            if not any(progressed):
                return any_work
            any_work = True

    def stop(self, timeout_s: float) -> bool:
        """Ask every stage to stop; wait up to ``timeout_s`` in all. True if all stopped.
        A stage stuck in a sink call is left behind (a daemon thread: it cannot hold the
        process), its work uncommitted."""
        self._stop.set()
        self._board.notify()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("stages still busy at shutdown, left behind: %s", ", ".join(stuck))
        return not stuck
