"""The writer stage on its own: jobs waiting for it are written together, up to a bound."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.fakes import FakeModel, ListSink, ManualClock, SendingListSink
from worker import metrics
from worker.flow import Board, Channel, Completed, Generations, Ref, WriteJob
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.schema import DeadLetter, DeadLetterReason, Post, PostEvent, SourceRef, Verdict
from worker.sinks import PermanentSinkError
from worker.stages import MERGE_RESULTS, SinkRefusedError, WriterStage

NOW = datetime(2026, 11, 30, tzinfo=UTC)


class Writer:
    def __init__(self, redis_failures: int = 0, dlq: SendingListSink | None = None) -> None:
        self.clock = ManualClock()
        board = Board()
        self.inbox: Channel[WriteJob] = Channel(board, capacity=4)
        self.outbox: Channel[Completed] = Channel(board)
        self.redis = ListSink("redis", failures=redis_failures)
        self.kafka = SendingListSink("kafka")
        self.dlq = dlq or SendingListSink("dead_letter")
        self.stage = WriterStage(
            [self.redis, self.kafka],
            self.dlq,
            self.inbox,
            self.outbox,
            Generations(),
            self.clock,
            backoff_s=(0.1, 1.0),
        )
        self.pipeline = Pipeline(FakeModel(), Policy(), Pseudonymiser(b"k"))
        self.offset = 0

    def _refs(self, n: int) -> list[Ref]:
        refs = [Ref(SourceRef("posts", 0, self.offset + i), 0, 0.0) for i in range(n)]
        self.offset += n
        return refs

    def queue_verdicts(self, n: int) -> None:
        refs = self._refs(n)
        posts = [
            Post(PostEvent(post_id=f"p{r.source.offset}", text="hello"), r.source, NOW)
            for r in refs
        ]
        verdicts = self.pipeline.classify(posts)
        self.inbox.put(WriteJob(list(zip(refs, verdicts, strict=True))))

    def queue_letter(self) -> None:
        [ref] = self._refs(1)
        letter = DeadLetter(DeadLetterReason.NOT_JSON, "bad", ref.source, None, b"{", [])
        self.inbox.put(WriteJob([(ref, letter)]))

    def completed(self) -> list[list[int]]:
        return [[r.source.offset for r in c.refs] for c in self.outbox.take_all()]


def post_ids(items: list[object]) -> list[str]:
    return [v.post_id for v in items if isinstance(v, Verdict)]


def test_jobs_waiting_are_written_in_one_call_to_each_sink() -> None:
    w = Writer()
    w.queue_verdicts(3)
    w.queue_letter()
    w.queue_verdicts(2)
    assert w.stage.work()
    assert (w.redis.attempts, w.kafka.waited, w.dlq.waited) == (1, 1, 1)
    assert post_ids(w.redis.items) == ["p0", "p1", "p2", "p4", "p5"]
    assert post_ids(w.kafka.items) == ["p0", "p1", "p2", "p4", "p5"]
    assert [d.source.offset for d in w.dlq.items] == [3]  # type: ignore[attr-defined]
    assert w.completed() == [[0, 1, 2, 3, 4, 5]]  # every record settled, in order
    assert len(w.inbox) == 0 and not w.stage.work()


def test_a_merge_stops_before_the_job_that_would_pass_the_bound() -> None:
    w = Writer()
    w.queue_verdicts(MERGE_RESULTS - 10)
    w.queue_verdicts(20)  # would make MERGE_RESULTS + 10: waits for the next write
    w.queue_verdicts(5)  # behind it, so it waits too: jobs keep their order
    w.stage.work()
    assert w.redis.attempts == 1 and len(w.redis.items) == MERGE_RESULTS - 10
    w.stage.work()
    assert w.redis.attempts == 2 and len(w.redis.items) == MERGE_RESULTS + 15
    offsets = [o for c in w.completed() for o in c]
    assert offsets == list(range(MERGE_RESULTS + 15))


def test_a_job_larger_than_the_bound_is_written_whole() -> None:
    w = Writer()
    w.queue_verdicts(MERGE_RESULTS + 1)
    w.queue_verdicts(1)
    w.stage.work()
    assert len(w.redis.items) == MERGE_RESULTS + 1 and len(w.inbox) == 1


def test_a_merged_write_that_fails_is_retried_whole_and_settles_once() -> None:
    w = Writer(redis_failures=1)
    w.queue_verdicts(2)
    w.queue_verdicts(2)
    w.stage.work()  # Redis refuses; Kafka holds both jobs' verdicts
    assert w.completed() == [] and post_ids(w.kafka.items) == ["p0", "p1", "p2", "p3"]
    w.clock.advance(0.1)
    w.stage.work()  # only Redis is written again
    assert post_ids(w.redis.items) == ["p0", "p1", "p2", "p3"]
    assert post_ids(w.kafka.items) == ["p0", "p1", "p2", "p3"]
    assert w.completed() == [[0, 1, 2, 3]]


class RefusingLetters(SendingListSink):
    """A dead-letter topic that refuses every letter for good (PermanentSinkError)."""

    def __init__(self) -> None:
        super().__init__("dead_letter")

    def send_batch(self, items: Sequence[object]) -> Any:
        self.attempts += 1
        raise PermanentSinkError("dead-letter topic refused the dead letter of posts[0]@1")


def test_a_letter_refused_for_good_stops_the_writer_instead_of_retrying_for_ever() -> None:
    w = Writer(dlq=RefusingLetters())
    w.queue_verdicts(1)
    w.queue_letter()
    w.queue_verdicts(1)
    with pytest.raises(SinkRefusedError, match=r"posts\[0\]@1.*stopping the worker"):
        w.stage.work()
    assert w.dlq.attempts == 1
    assert post_ids(w.redis.items) == ["p0", "p2"]  # the other sinks' writes still finish
    assert w.completed() == []  # nothing of the job is reported, so none of it is committed
    assert w.stage.down == frozenset()  # not down: refused, which no retry would change


def test_a_dead_letter_sink_that_is_down_is_still_retried() -> None:
    w = Writer(dlq=SendingListSink("dead_letter", failures=2))
    w.queue_letter()
    for _ in range(3):
        w.stage.work()
        w.clock.advance(1.0)
    assert w.dlq.attempts == 3 and w.completed() == [[0]]


def errors(stage: str) -> float:
    return REGISTRY.get_sample_value("modstream_errors_total", {"stage": stage}) or 0.0


# The stage labels the alerts and dashboards use (deploy/prometheus/rules.yml and its tests):
# written out here, not read from worker.stages, so a renamed label fails this test.
@pytest.mark.parametrize(
    ("sink", "stage"),
    [("redis", "redis"), ("kafka", "kafka_produce"), ("dead_letter", "dead_letter")],
)
def test_a_failed_write_counts_one_error_under_its_sinks_stage_and_no_other(
    sink: str, stage: str
) -> None:
    w = Writer()
    {"redis": w.redis, "kafka": w.kafka, "dead_letter": w.dlq}[sink].failures = 1
    if sink == "dead_letter":
        w.queue_letter()
    else:
        w.queue_verdicts(1)
    before = {s: errors(s) for s in metrics.ERROR_STAGES}  # the registry is the process's
    w.stage.work()  # the sink fails: one error
    assert w.completed() == [] and w.stage.down == {sink}
    w.clock.advance(0.1)
    w.stage.work()  # the retry succeeds: no more errors
    assert w.completed() == [[0]]
    counted = {s: errors(s) - before[s] for s in metrics.ERROR_STAGES}
    assert counted == {s: 1.0 if s == stage else 0.0 for s in metrics.ERROR_STAGES}
