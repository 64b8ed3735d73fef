"""The run loop with an in-memory consumer, sinks and model."""

from __future__ import annotations

import pytest

from tests.fakes import FakeConsumer, FakeModel, ListSink, ManualClock, record
from worker.batcher import BatchLimits, MicroBatcher
from worker.checkpoint import Partition
from worker.loop import Item, LoopConfig, Worker
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.schema import Action, DeadLetter, DeadLetterReason, Verdict

P0, P1 = Partition("posts", 0), Partition("posts", 1)


class Rig:
    def __init__(
        self,
        *,
        max_size: int = 4,
        wait: float = 0.05,
        redis_failures: int = 0,
        model: FakeModel | None = None,
        max_pending: int = 1000,
        store_text: bool = False,
        grace: float = 5.0,
    ) -> None:
        self.clock = ManualClock()
        self.sleeps: list[float] = []
        self.consumer = FakeConsumer()
        self.model = model or FakeModel()
        self.redis = ListSink("redis", failures=redis_failures)
        self.kafka = ListSink("kafka")
        self.dlq = ListSink("dead_letter")
        batcher: MicroBatcher[Item] = MicroBatcher(
            BatchLimits(max_size, wait, 10_000), cost=lambda i: 10, clock=self.clock
        )
        self.worker = Worker(
            self.consumer,
            batcher,
            Pipeline(self.model, Policy(), Pseudonymiser(b"k"), store_text=store_text),
            [self.redis, self.kafka],
            self.dlq,
            LoopConfig(max_pending=max_pending, shutdown_grace_s=grace),
            clock=self.clock,
            sleep=self._sleep,
        )
        self.consumer.subscribe(self.worker._on_revoked, self.worker._on_assigned)

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    def verdicts(self) -> list[Verdict]:
        return [v for v in self.redis.items if isinstance(v, Verdict)]


def post(i: int, text: str = "hello world", **extra: object) -> dict[str, object]:
    return {"post_id": f"p{i}", "text": text, **extra}


def test_every_record_gets_exactly_one_result_and_offsets_follow() -> None:
    rig = Rig(max_size=4)
    rig.consumer.queue = (
        [record(i, post(i)) for i in range(3)]
        + [record(3, b"{broken")]
        + [record(4, post(4, "this is fake news")), record(5, post(5, "i hate this"))]
    )
    rig.worker.step()  # 5 posts queued: first batch of 4 is full
    rig.clock.advance(1)
    rig.worker.step()  # the last post's wait has run out
    assert [v.post_id for v in rig.verdicts()] == ["p0", "p1", "p2", "p4", "p5"]
    assert rig.kafka.items == rig.redis.items
    assert [d.reason for d in rig.dlq.items] == [DeadLetterReason.NOT_JSON]  # type: ignore[attr-defined]
    actions = {v.post_id: v.action for v in rig.verdicts()}
    assert actions == {
        "p0": Action.ALLOW,
        "p1": Action.ALLOW,
        "p2": Action.ALLOW,
        "p4": Action.BLOCK,
        "p5": Action.REVIEW,
    }
    assert rig.consumer.committed() == {P0: 6}


def test_offsets_are_not_committed_before_the_sinks_acknowledge() -> None:
    rig = Rig(max_size=2, redis_failures=3)
    rig.consumer.queue = [record(0, post(0)), record(1, post(1))]
    commits_seen_during_failures = []
    original = rig.redis.write_batch

    def spy(items):  # type: ignore[no-untyped-def]
        commits_seen_during_failures.append(len(rig.consumer.commits))
        return original(items)

    rig.redis.write_batch = spy  # type: ignore[method-assign]
    rig.worker.step()
    assert commits_seen_during_failures == [0, 0, 0, 0]  # three failures, then success
    assert rig.sleeps == [0.1, 0.2, 0.4]  # exponential backoff
    assert len(rig.verdicts()) == 2
    assert rig.consumer.committed() == {P0: 2}


def test_a_post_that_breaks_the_model_is_dead_lettered_and_the_rest_scored() -> None:
    rig = Rig(max_size=3, model=FakeModel(fail_on="boom"))
    rig.consumer.queue = [record(0, post(0)), record(1, post(1, "boom")), record(2, post(2))]
    rig.worker.step()
    assert [v.post_id for v in rig.verdicts()] == ["p0", "p2"]
    letters = [d for d in rig.dlq.items if isinstance(d, DeadLetter)]
    assert [(d.reason, d.source.offset) for d in letters] == [(DeadLetterReason.MODEL_ERROR, 1)]
    assert b'"boom"' in (letters[0].value or b"")
    assert rig.model.calls == [3, 1, 1, 1]
    assert rig.consumer.committed() == {P0: 3}


def test_privacy_author_is_pseudonymised_and_text_not_stored() -> None:
    rig = Rig(max_size=1)
    rig.consumer.queue = [record(0, post(0, "secret words", author_id="alice"))]
    rig.worker.step()
    v = rig.verdicts()[0]
    assert v.text is None and v.author_pseudonym and v.author_pseudonym != "alice"
    assert "alice" not in v.model_dump_json() and "secret words" not in v.model_dump_json()


def test_text_is_stored_when_asked() -> None:
    rig = Rig(max_size=1, store_text=True)
    rig.consumer.queue = [record(0, post(0, "keep me"))]
    rig.worker.step()
    assert rig.verdicts()[0].text == "keep me"


def test_revocation_commits_what_is_done_and_drops_the_rest() -> None:
    rig = Rig(max_size=2)
    rig.consumer.queue = [
        record(0, post(0), partition=0),
        record(1, post(1), partition=0),
        record(0, post(10), partition=1),
    ]
    rig.worker.step()  # p0, p1 written; p10 waits in the batcher
    assert rig.consumer.committed() == {P0: 2}
    assert rig.consumer.on_revoked is not None
    rig.consumer.on_revoked({P1})
    rig.clock.advance(1)
    rig.worker.step()
    assert [v.post_id for v in rig.verdicts()] == ["p0", "p1"]  # p10 left for the new owner
    assert P1 not in rig.consumer.committed()


def test_stop_drains_the_batch_in_hand_and_commits() -> None:
    rig = Rig(max_size=10, wait=60)
    rig.consumer.queue = [record(i, post(i)) for i in range(3)]
    rig.worker.step()
    assert rig.verdicts() == []  # batch not full, wait not over
    rig.worker.request_stop()
    rig.worker.run()  # returns at once: drains, commits
    assert len(rig.verdicts()) == 3
    assert rig.consumer.committed() == {P0: 3}


def test_stop_while_a_sink_is_down_gives_up_after_the_grace_time_without_committing() -> None:
    rig = Rig(max_size=1, redis_failures=10**6, grace=3.0)
    rig.consumer.queue = [record(0, post(0))]
    rig.worker.request_stop()
    rig.worker.step()
    assert rig.consumer.committed() == {}
    assert sum(rig.sleeps) <= 3.0 + 5.0


def test_backpressure_pauses_and_resumes_consumption() -> None:
    rig = Rig(max_size=2, wait=60, max_pending=4)
    rig.consumer.queue = [record(i, post(i)) for i in range(12)]
    rig.worker._cfg = rig.worker._cfg.__class__(max_poll_records=6, max_pending=4)
    rig.worker.step()  # polls 6, processes 2 -> 4 pending -> pause
    assert rig.consumer.paused
    rig.worker.step()  # no poll while paused; processes 2 -> 2 pending -> resume
    assert not rig.consumer.paused
    for _ in range(6):
        rig.worker.step()
    assert len(rig.verdicts()) == 12
    assert rig.consumer.committed() == {P0: 12}


def test_a_failed_commit_is_retried_on_the_next_step() -> None:
    rig = Rig(max_size=1)
    rig.consumer.fail_commits = 1
    rig.consumer.queue = [record(0, post(0))]
    rig.worker.step()
    assert rig.consumer.committed() == {}
    rig.worker.step()
    assert rig.consumer.committed() == {P0: 1}


@pytest.mark.parametrize("n", [1, 7, 64])
def test_verdict_count_equals_post_count(n: int) -> None:
    rig = Rig(max_size=5)
    rig.consumer.queue = [record(i, post(i)) for i in range(n)]
    for _ in range(n + 2):
        rig.clock.advance(1)
        rig.worker.step()
    assert sorted(v.post_id for v in rig.verdicts()) == sorted(f"p{i}" for i in range(n))


def test_dead_letters_not_acknowledged_at_shutdown_are_not_committed() -> None:
    rig = Rig(max_size=1, grace=1.0)
    rig.dlq.failures = 10**6
    rig.consumer.queue = [record(0, b"{broken")]
    rig.worker.request_stop()
    rig.worker.step()
    assert rig.consumer.committed() == {}


def test_a_partition_that_comes_back_is_read_again_from_its_first_unfinished_record() -> None:
    rig = Rig(max_size=2, wait=60)
    rig.consumer.queue = [record(i, post(i)) for i in range(3)]
    rig.worker.step()  # p0, p1 written and committed; p2 waits in the batcher
    assert rig.consumer.on_revoked and rig.consumer.on_assigned
    rig.consumer.on_revoked({P0})
    rig.consumer.on_assigned({P0})  # an eager rebalance gives it straight back
    rig.worker.step()
    assert rig.consumer.rewound == [{P0: 2}]  # p2 was dropped: read it again
    assert rig.consumer.committed() == {P0: 2}


def test_poll_does_not_wait_while_a_full_batch_is_due() -> None:
    rig = Rig(max_size=2, wait=60)
    rig.worker._cfg = rig.worker._cfg.__class__(max_poll_records=4)
    rig.consumer.queue = [record(i, post(i)) for i in range(4)]
    rig.worker.step()  # polls 4, processes 2: a full batch of 2 is still due
    rig.worker.step()
    assert rig.consumer.poll_timeouts == [100, 0]
    assert len(rig.verdicts()) == 4
