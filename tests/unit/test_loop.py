"""The main loop and its stages, run inline (deterministic) with in-memory fakes.
Threaded runs are in test_stages_threaded.py."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from tests.fakes import FakeConsumer, FakeModel, ListSink, ManualClock, SendingListSink, record
from worker import metrics
from worker.batcher import BatchLimits, MicroBatcher, Size
from worker.checkpoint import OffsetOrderError, Partition
from worker.consumer import Record
from worker.flow import Prepared
from worker.loop import FINAL_COMMIT_S, LoopConfig, Worker
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.schema import Action, DeadLetter, DeadLetterReason, Verdict
from worker.stages import ModelBrokenError
from worker.transactions import Transactions

P0, P1 = Partition("posts", 0), Partition("posts", 1)


class Rig:
    def __init__(
        self,
        *,
        max_size: int = 4,
        wait: float = 0.05,
        redis: ListSink | None = None,
        model: FakeModel | None = None,
        store_text: bool = False,
        kafka: SendingListSink | None = None,
        dlq: SendingListSink | None = None,
        transactions: Transactions | None = None,
        consumer: FakeConsumer | None = None,
        **config: object,
    ) -> None:
        self.clock = ManualClock()
        self.sleeps: list[float] = []
        self.consumer = consumer or FakeConsumer()
        self.model = model or FakeModel()
        self.redis = redis or ListSink("redis")
        self.kafka = kafka or SendingListSink("kafka")
        self.dlq = dlq or SendingListSink("dead_letter")
        batcher: MicroBatcher[Prepared] = MicroBatcher(
            BatchLimits(max_size, wait, 10_000),
            lambda p: Size(p.encoded.rows, p.encoded.tokens),
            clock=self.clock,
        )
        self.worker = Worker(
            self.consumer,
            batcher,
            Pipeline(self.model, Policy(), Pseudonymiser(b"k"), store_text=store_text),
            [self.redis, self.kafka],
            self.dlq,
            LoopConfig(**config),  # type: ignore[arg-type]
            clock=self.clock,
            sleep=self._sleep,
            threaded=False,
            transactions=transactions,
        )
        self.consumer.subscribe(self.worker._on_revoked, self.worker._on_assigned)

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    def verdicts(self) -> list[Verdict]:
        return [v for v in self.redis.items if isinstance(v, Verdict)]

    def letters(self) -> list[DeadLetter]:
        return [d for d in self.dlq.items if isinstance(d, DeadLetter)]


class LogConsumer(FakeConsumer):
    """Partition logs read from a fetch position each, as kafka-python reads them.

    ``rewind`` seeks. A rebalance set up with :meth:`rebalance` runs inside the next
    ``poll`` (the listener fires there), and that poll then returns records from the
    positions kept through it: kafka-python keeps a partition's state, its position
    included, when the partition is assigned to the same member again. A revoked partition
    is not fetched until it is assigned again."""

    def __init__(self, logs: dict[Partition, list[Record]], per_poll: int = 3) -> None:
        super().__init__()
        self.logs = logs
        self.position = dict.fromkeys(logs, 0)
        self.owned = set(logs)
        self.per_poll = per_poll  # records per partition per poll
        self._rebalance: list[tuple[str, set[Partition]]] = []

    def rebalance(self, *events: tuple[str, set[Partition]]) -> None:
        """Run these listener calls inside the next poll."""
        self._rebalance = list(events)

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        for kind, partitions in self._rebalance:
            if kind == "revoked":
                assert self.on_revoked is not None
                self.owned -= partitions
                self.on_revoked(partitions)
            else:
                assert self.on_assigned is not None
                self.owned |= partitions
                self.on_assigned(partitions)
        self._rebalance = []
        if self.paused:
            return []
        out: list[Record] = []
        for tp in sorted(self.owned):
            at = self.position[tp]
            out += self.logs[tp][at : at + self.per_poll]
            self.position[tp] = min(at + self.per_poll, len(self.logs[tp]))
        return out

    def rewind(self, offsets: dict[Partition, int]) -> None:
        super().rewind(offsets)
        self.position.update(offsets)


def post(i: int, text: str = "hello world", **extra: object) -> dict[str, object]:
    return {"post_id": f"p{i}", "text": text, **extra}


def refuses(post_id: str):  # type: ignore[no-untyped-def]
    """A sink predicate: refuse any batch holding this post."""
    return lambda items: any(getattr(v, "post_id", None) == post_id for v in items)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_record_gets_exactly_one_result_and_offsets_follow() -> None:
    rig = Rig(max_size=4)
    rig.consumer.queue = (
        [record(i, post(i)) for i in range(3)]
        + [record(3, b"{broken")]
        + [record(4, post(4, "this is fake news")), record(5, post(5, "i hate this"))]
    )
    rig.worker.step()
    assert sorted(v.post_id for v in rig.verdicts()) == ["p0", "p1", "p2", "p4", "p5"]
    assert sorted(rig.kafka.items, key=id) == sorted(rig.redis.items, key=id)
    assert [d.reason for d in rig.letters()] == [DeadLetterReason.NOT_JSON]
    actions = {v.post_id: v.action for v in rig.verdicts()}
    assert actions == {
        "p0": Action.ALLOW,
        "p1": Action.ALLOW,
        "p2": Action.ALLOW,
        "p4": Action.BLOCK,
        "p5": Action.REVIEW,
    }
    assert rig.consumer.committed() == {P0: 6}


def test_counters_count_each_record_once_by_topic_action_and_reason() -> None:
    rig = Rig(max_size=4)
    names = (
        ("modstream_events_consumed_total", {"topic": "posts"}),
        ("modstream_events_consumed_total", {"topic": "posts-eu"}),
        ("modstream_verdicts_total", {"action": "allow"}),
        ("modstream_verdicts_total", {"action": "block"}),
        ("modstream_verdicts_total", {"action": "review"}),
        ("modstream_dead_letters_total", {"reason": "not_json"}),
    )
    before = [metric(name, **labels) for name, labels in names]
    rig.consumer.queue = (
        [record(i, post(i)) for i in range(3)]
        + [record(3, b"{broken"), record(4, b"[")]
        + [record(0, post(5, "this is fake news"), topic="posts-eu")]
        + [record(5, post(6, "i hate this")), record(6, post(7, "fake and hate"))]
    )
    rig.worker.step()
    after = [metric(name, **labels) for name, labels in names]
    counted = [round(a - b) for a, b in zip(after, before, strict=True)]
    actions = [v.action for v in rig.verdicts()]
    assert counted == [
        7,
        1,
        actions.count(Action.ALLOW),
        actions.count(Action.BLOCK),
        actions.count(Action.REVIEW),
        2,
    ]
    assert counted[2:5] == [3, 2, 1]


class RoundingModel(FakeModel):
    """Computes every batch padded to multiples of 8 rows and 16 tokens, as the predictor
    does on a bf16 CPU."""

    def padded_shape(self, rows: int, width: int) -> tuple[int, int]:
        return -(-rows // 8) * 8, -(-width // 16) * 16


def test_padded_tokens_count_the_padding_the_model_adds_to_its_shapes() -> None:
    rig = Rig(max_size=4, model=RoundingModel())
    tokens_before = metric("modstream_batch_padded_tokens_sum")
    share_before = metric("modstream_batch_padding_ratio_sum")
    rig.consumer.queue = [record(0, post(0, "a b")), record(1, post(1, "c d"))]
    rig.worker.step()
    assert rig.model.calls == [2]  # one batch: 2 rows of 4 tokens (2 words + 2 specials)
    assert metric("modstream_batch_padded_tokens_sum") == tokens_before + 8 * 16
    assert metric("modstream_batch_padding_ratio_sum") == pytest.approx(share_before + 1 - 8 / 128)


def test_posts_are_tokenised_off_the_model_and_batched_by_real_length() -> None:
    rig = Rig(max_size=2)
    before = metric("modstream_batch_padded_tokens_count")
    share_before = metric("modstream_batch_padding_ratio_sum")
    long_text = " ".join(["word"] * 252)  # 2 full windows of the fake model's 128 tokens
    rig.consumer.queue = [
        record(0, post(0, "a b")),
        record(1, post(1, long_text)),
        record(2, post(2, "c d")),
    ]
    rig.worker.step()
    assert rig.model.prepared == [3]  # one tokenise call for the polled chunk
    # The oldest short post goes with the other short one, the long post alone.
    assert rig.model.calls == [2, 1]
    assert sorted(v.post_id for v in rig.verdicts()) == ["p0", "p1", "p2"]
    assert metric("modstream_batch_padded_tokens_count") == before + 2
    assert metric("modstream_batch_padding_ratio_sum") == pytest.approx(share_before)  # no pad
    assert rig.consumer.committed() == {P0: 3}


def test_offsets_wait_for_every_sink_and_only_the_failed_sink_is_retried() -> None:
    rig = Rig(max_size=2, redis=ListSink("redis", failures=3))
    rig.consumer.queue = [record(0, post(0)), record(1, post(1))]
    rig.worker.step()  # Kafka acknowledged, Redis failed: nothing committed
    assert rig.consumer.committed() == {}
    assert len(rig.kafka.items) == 2
    rig.worker.step()  # the retry is a deadline, not a sleep: the loop goes on polling
    assert rig.redis.attempts == 1 and rig.sleeps == []
    for delay in (0.1, 0.2, 0.4):  # exponential backoff
        rig.clock.advance(delay)
        rig.worker.step()
    assert rig.redis.attempts == 4
    assert len(rig.verdicts()) == 2
    assert len(rig.kafka.items) == 2  # Kafka already held them: not sent again
    assert rig.consumer.committed() == {P0: 2}


def test_a_failed_kafka_ack_holds_the_commit_too() -> None:
    rig = Rig(max_size=2)
    rig.kafka.failures = 1
    rig.consumer.queue = [record(0, post(0))]
    rig.worker.step()
    assert rig.consumer.committed() == {} and len(rig.verdicts()) == 1
    rig.clock.advance(0.1)
    rig.worker.step()
    assert rig.consumer.committed() == {P0: 1}
    assert rig.redis.attempts == 1  # Redis held it already


def test_nothing_is_committed_past_a_batch_that_is_not_acknowledged() -> None:
    rig = Rig(max_size=1, redis=ListSink("redis", fail_if=refuses("p1")))
    rig.consumer.queue = [record(i, post(i)) for i in range(4)]
    for _ in range(3):
        rig.clock.advance(1)
        rig.worker.step()
    # p1's batch keeps failing, so its writer holds p2 and p3 back: commit stops at 1.
    assert [v.post_id for v in rig.verdicts()] == ["p0"]
    assert rig.consumer.committed() == {P0: 1}
    rig.redis.fail_if = None
    rig.clock.advance(10)
    rig.worker.step()
    assert rig.consumer.committed() == {P0: 4}


def test_a_post_that_breaks_the_model_is_dead_lettered_and_the_rest_scored() -> None:
    rig = Rig(max_size=3, model=FakeModel(fail_on="boom"))
    rig.consumer.queue = [record(0, post(0)), record(1, post(1, "boom")), record(2, post(2))]
    rig.worker.step()
    assert [v.post_id for v in rig.verdicts()] == ["p0", "p2"]
    letters = rig.letters()
    assert [(d.reason, d.source.offset) for d in letters] == [(DeadLetterReason.MODEL_ERROR, 1)]
    assert b'"boom"' in (letters[0].value or b"")
    assert rig.model.calls == [3, 1, 1, 1]
    assert rig.consumer.committed() == {P0: 3}


def test_a_broken_model_stops_the_worker_without_committing_its_posts() -> None:
    rig = Rig(max_size=8, model=FakeModel(fail_on="*"), model_failure_limit=3)
    rig.consumer.queue = [record(i, post(i)) for i in range(5)]
    metrics.MODEL_HEALTHY.set(1)  # the registry is the process's: what this test sets it to
    with pytest.raises(ModelBrokenError):
        rig.worker.run()
    assert rig.model.calls == [5, 1, 1, 1]  # the batch, then three posts alone: broken
    assert rig.letters() == [] and rig.verdicts() == []
    assert rig.consumer.committed() == {}
    assert not rig.worker.ready(60) and not rig.worker.alive(60)
    assert metric("modstream_model_healthy") == 0


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


def test_revocation_commits_what_is_done_and_drops_in_flight_work() -> None:
    rig = Rig(max_size=2, redis=ListSink("redis", fail_if=refuses("p10")))
    rig.consumer.queue = [
        record(0, post(0), partition=0),
        record(1, post(1), partition=0),
        record(0, post(10), partition=1),
    ]
    rig.worker.step()  # p0, p1 written and committed; p10's batch is stuck in the writer
    assert rig.consumer.committed() == {P0: 2}
    assert rig.consumer.on_revoked is not None
    rig.consumer.on_revoked({P1})
    rig.redis.fail_if = None  # the sink recovers, but p10 is no longer ours
    rig.clock.advance(1)
    rig.worker.step()
    assert [v.post_id for v in rig.verdicts()] == ["p0", "p1"]  # p10 left for the new owner
    assert P1 not in rig.consumer.committed()
    assert rig.worker.assigned == set()


def test_a_partition_that_comes_back_is_read_again_and_late_results_are_ignored() -> None:
    rig = Rig(max_size=2, redis=ListSink("redis", fail_if=refuses("p2")))
    rig.consumer.queue = [record(i, post(i)) for i in range(3)]
    rig.worker.step()  # p0, p1 committed; p2 stuck in the writer
    assert rig.consumer.on_revoked and rig.consumer.on_assigned
    rig.consumer.on_revoked({P0})
    rig.consumer.on_assigned({P0})  # an eager rebalance gives it straight back
    rig.worker.step()
    assert rig.consumer.rewound == [{P0: 2}]  # p2 was dropped: read it again
    assert rig.consumer.committed() == {P0: 2}
    rig.redis.fail_if = None
    rig.consumer.queue = [record(2, post(2, "second reading"))]
    rig.clock.advance(1)
    rig.worker.step()
    # The stale p2 job was dropped at the writer; only the new reading was written.
    assert [v.post_id for v in rig.verdicts()] == ["p0", "p1", "p2"]
    assert rig.consumer.committed() == {P0: 3}


def skipped(committed: int, written: Sequence[str]) -> list[int]:
    """Offsets below ``committed`` whose post (post i at offset i) has no verdict written."""
    return [i for i in range(committed) if f"p{i}" not in written]


def test_a_partition_given_straight_back_rereads_its_dropped_work_before_newer_records() -> None:
    """kafka-python runs an eager rebalance inside poll(), and a partition the member keeps
    holds its fetch position: that same poll returns the records after the ones in flight.
    Tracked ahead of the dropped work's second reading, their verdicts committed past it
    (a crash or another rebalance then lost it) and the committed offset went backwards."""
    log = LogConsumer({P0: [record(i, post(i)) for i in range(9)]})
    rig = Rig(max_size=2, redis=ListSink("redis", fail_if=refuses("p2")), consumer=log)
    rig.worker.step()  # 0, 1, 2 polled: p0, p1 committed; p2 stuck in the writer
    assert log.committed() == {P0: 2}
    log.rebalance(("revoked", {P0}), ("assigned", {P0}))
    rig.clock.advance(1)
    rig.worker.step()  # the poll that rebalances returns 3, 4, 5 from the kept position
    assert log.rewound == [{P0: 2}]  # read again from p2, the first unfinished
    # A kill -9 or a second rebalance now: the next reader starts at p2, the first post
    # with no verdict, however far the rest got.
    for _ in range(3):
        rig.clock.advance(1)
        rig.worker.step()
        written = [v.post_id for v in rig.verdicts()]
        assert skipped(log.committed()[P0], written) == []
    rig.redis.fail_if = None
    for _ in range(6):
        rig.clock.advance(1)
        rig.worker.step()
        assert skipped(log.committed()[P0], [v.post_id for v in rig.verdicts()]) == []
    assert [v.post_id for v in rig.verdicts()] == [f"p{i}" for i in range(9)]  # once each
    commits = [c[P0] for c in log.commits]
    assert commits == sorted(commits) and commits[-1] == 9  # never backwards


def test_a_partition_assigned_back_in_a_later_poll_drops_what_that_poll_returned() -> None:
    """A join that outlasts a poll: the revocation comes in one poll, the assignment in a
    later one, and the poll that assigns returns records from the position kept through."""
    log = LogConsumer({P0: [record(i, post(i)) for i in range(9)]})
    rig = Rig(max_size=2, redis=ListSink("redis", fail_if=refuses("p2")), consumer=log)
    rig.worker.step()  # p0, p1 committed; p2 stuck in the writer
    log.rebalance(("revoked", {P0}))
    rig.worker.step()  # the join goes on: nothing fetched for P0 meanwhile
    assert log.rewound == []
    log.rebalance(("assigned", {P0}))
    rig.clock.advance(1)
    rig.worker.step()  # returns 3, 4, 5: dropped, read again after p2
    assert log.rewound == [{P0: 2}]
    for _ in range(3):  # p2 still refused: nothing committed past it
        rig.clock.advance(1)
        rig.worker.step()
        assert skipped(log.committed()[P0], [v.post_id for v in rig.verdicts()]) == []
    rig.redis.fail_if = None
    for _ in range(8):
        rig.clock.advance(1)
        rig.worker.step()
        assert skipped(log.committed()[P0], [v.post_id for v in rig.verdicts()]) == []
    assert [v.post_id for v in rig.verdicts()] == [f"p{i}" for i in range(9)]
    assert log.committed() == {P0: 9}


def test_a_second_revocation_before_the_assignment_keeps_where_to_read_again() -> None:
    """kafka-python rejoins without assigning when it refuses an assignment, then revokes
    the same partitions again: nothing is in flight by then, and the first revocation's
    rewind was replaced by an empty one, so the partition, given back with its fetch
    position kept, skipped the dropped post."""
    log = LogConsumer({P0: [record(i, post(i)) for i in range(9)]})
    rig = Rig(max_size=2, redis=ListSink("redis", fail_if=refuses("p2")), consumer=log)
    rig.worker.step()  # p0, p1 committed; p2 stuck in the writer
    log.rebalance(("revoked", {P0}))
    rig.worker.step()
    log.rebalance(("revoked", {P0}))  # again, before any assignment
    rig.worker.step()
    log.rebalance(("assigned", {P0}))
    rig.redis.fail_if = None
    for _ in range(8):
        rig.clock.advance(1)
        rig.worker.step()
        assert skipped(log.committed()[P0], [v.post_id for v in rig.verdicts()]) == []
    assert log.rewound == [{P0: 2}]
    assert [v.post_id for v in rig.verdicts()] == [f"p{i}" for i in range(9)]
    assert log.committed() == {P0: 9}


def test_a_partition_given_back_with_nothing_in_flight_reads_the_rebalancing_poll_again() -> None:
    log = LogConsumer({P0: [record(i, post(i)) for i in range(6)]})
    rig = Rig(max_size=3, consumer=log)
    rig.worker.step()  # 0, 1, 2 written and committed
    log.rebalance(("revoked", {P0}), ("assigned", {P0}))
    rig.worker.step()  # returns 3, 4, 5: dropped with the rebalance, read again from 3
    assert log.rewound == [{P0: 3}] and log.committed() == {P0: 3}
    rig.worker.step()
    assert [v.post_id for v in rig.verdicts()] == [f"p{i}" for i in range(6)]
    assert log.committed() == {P0: 6}


def test_an_offset_polled_below_one_in_flight_stops_the_worker_before_any_commit() -> None:
    """Defence in depth: the done prefix follows the order records are tracked in, so a
    lower offset after a higher one (without a revocation between) could be committed
    past: the worker refuses it loudly instead."""
    rig = Rig(max_size=4)
    rig.consumer.queue = [record(0, post(0)), record(3, post(3)), record(1, post(1))]
    with pytest.raises(OffsetOrderError, match=r"offset 1 tracked after 3"):
        rig.worker.step()
    assert rig.consumer.commits == []


def test_stop_drains_what_is_in_flight_and_commits() -> None:
    rig = Rig(max_size=10, redis=ListSink("redis", failures=2))
    rig.consumer.queue = [record(i, post(i)) for i in range(3)]
    rig.worker.step()
    assert rig.verdicts() == []  # the sink is down for now
    rig.worker.request_stop()
    rig.worker.run()  # drains: the writer's retries succeed within the grace time
    assert len(rig.verdicts()) == 3
    assert rig.consumer.committed() == {P0: 3}


def test_stop_while_a_sink_is_down_gives_up_after_the_grace_time_without_committing() -> None:
    rig = Rig(max_size=1, redis=ListSink("redis", failures=10**6), shutdown_grace_s=3.0)
    rig.consumer.queue = [record(0, post(0))]
    rig.worker.step()
    rig.worker.request_stop()
    rig.worker.run()
    assert rig.consumer.committed() == {}
    assert sum(rig.sleeps) == pytest.approx(3.0, abs=0.11)


def test_commits_after_stop_are_bounded_by_the_grace_left() -> None:
    """A commit to a broker that does not answer blocks for its timeout; after SIGTERM that
    timeout is what is left of the grace time, not the consumer's own bound (kafka-python's:
    305 s), so the worker exits in time (the last commit's floor, FINAL_COMMIT_S, is in
    the SIGTERM-during-a-commit test below)."""
    rig = Rig(max_size=10, redis=ListSink("redis", failures=2), shutdown_grace_s=20.0)
    rig.consumer.queue = [record(i, post(i)) for i in range(3)]
    rig.worker.step()
    assert rig.consumer.commit_timeouts == []  # nothing acknowledged yet
    stopped_at = rig.clock.now
    rig.worker.request_stop()
    rig.worker.run()
    assert rig.consumer.committed() == {P0: 3}
    bounds = rig.consumer.commit_timeouts
    assert bounds
    for b in bounds:
        assert b is not None and 0 < b <= 20.0, bounds
    # Committed as soon as the sink caught up: within the grace, the rest of it the bound.
    assert bounds[-1] == pytest.approx(20.0 - (rig.clock.now - stopped_at), abs=0.01)


def test_commits_while_running_are_bounded_by_the_grace_time() -> None:
    """The consumer caps a commit at MODSTREAM_SINK_TIMEOUT_SECONDS; the loop caps it at the
    grace time too (never under FINAL_COMMIT_S), since a SIGTERM waits for it."""
    for grace, bound in ((20.0, 20.0), (1.0, FINAL_COMMIT_S)):
        rig = Rig(max_size=10, shutdown_grace_s=grace)
        rig.consumer.queue = [record(i, post(i)) for i in range(3)]
        rig.worker.step()
        rig.clock.advance(2)
        rig.worker.step()
        assert rig.consumer.committed() == {P0: 3}
        assert rig.consumer.commit_timeouts == [bound]


def test_a_sigterm_during_a_commit_to_a_dead_broker_exits_within_the_grace_and_final_bound() -> (
    None
):
    """The broker stops answering; a periodic commit blocks, and SIGTERM arrives during it
    (the main thread sees it only when the commit returns). The grace time counts from the
    signal, and no commit outlasts it, so the worker is done within the grace time and one
    last commit after it, even with a sink timeout (30 s here) longer than the grace
    (20 s): before, the commit in progress took its full 30 s and the grace began after
    it, 49 s from the signal here, past the manifests' 40 s."""
    from kafka.errors import KafkaTimeoutError

    grace, sink_timeout = 20.0, 30.0
    rig = Rig(max_size=10, shutdown_grace_s=grace)
    signal_at: list[float] = []
    asked: list[dict[Partition, int]] = []  # what the worker tried to commit

    def dead_broker_commit(offsets: dict[Partition, int], timeout_s: float | None = None) -> None:
        bound = sink_timeout if timeout_s is None else min(timeout_s, sink_timeout)
        rig.consumer.commit_timeouts.append(timeout_s)
        asked.append(dict(offsets))
        if not signal_at:  # the signal comes a second into the first blocked commit
            rig.clock.advance(1.0)
            signal_at.append(rig.clock.now)
            rig.worker.request_stop()
            bound -= 1.0
        rig.clock.advance(bound)
        raise KafkaTimeoutError("the broker did not answer")

    rig.consumer.commit = dead_broker_commit  # type: ignore[method-assign]
    rig.consumer.queue = [record(i, post(i)) for i in range(3)]
    rig.worker.step()  # scored, written; the commit blocks and the signal comes
    assert signal_at and asked == [{P0: 3}]  # the three posts' commit is what blocked
    rig.worker.run()  # sees the stop at once
    took = rig.clock.now - signal_at[0]
    assert took <= grace + FINAL_COMMIT_S + 0.01, (took, rig.consumer.commit_timeouts)
    assert len(asked) == 2 and asked[-1] == {P0: 3}  # one last try at stop, then it gives up


def test_backpressure_pauses_until_the_sinks_catch_up_then_resumes() -> None:
    rig = Rig(
        max_size=2,
        redis=ListSink("redis", failures=2),
        max_poll_records=6,
        max_pending=4,
    )
    # The registry is the process's: what this test sets it to (ModstreamPaused reads it).
    metrics.PAUSED.set(0)
    rig.consumer.queue = [record(i, post(i)) for i in range(12)]
    rig.worker.step()  # 6 polled, none acknowledged: over the limit -> pause
    assert rig.consumer.paused
    assert metric("modstream_consumption_paused") == 1
    rig.worker.step()  # still failing; paused polls fetch nothing
    assert rig.consumer.paused and len(rig.consumer.queue) == 6
    assert metric("modstream_consumption_paused") == 1
    rig.clock.advance(0.1)
    rig.worker.step()  # second failure
    rig.clock.advance(0.2)
    rig.worker.step()  # acknowledged: in flight drops to 0 -> resume
    assert not rig.consumer.paused
    assert metric("modstream_consumption_paused") == 0
    for _ in range(3):
        rig.worker.step()
    assert sorted(v.post_id for v in rig.verdicts()) == sorted(f"p{i}" for i in range(12))
    assert rig.consumer.committed() == {P0: 12}


def test_with_work_in_flight_offsets_commit_once_per_interval_and_at_once_when_none_is() -> None:
    rig = Rig(max_size=1, redis=ListSink("redis", fail_if=refuses("p3")), commit_interval_s=1.0)
    rig.consumer.queue = [record(0, post(0)), record(1, post(1))]
    rig.worker.step()  # both acknowledged, nothing in flight: committed at once
    assert rig.consumer.commits == [{P0: 2}]
    rig.clock.advance(0.1)
    rig.consumer.queue = [record(2, post(2)), record(3, post(3))]
    rig.worker.step()  # p2 acknowledged, p3 refused and in flight: the interval is not up
    assert [v.post_id for v in rig.verdicts()] == ["p0", "p1", "p2"]
    assert rig.consumer.commits == [{P0: 2}]
    rig.clock.advance(0.5)
    rig.worker.step()
    assert rig.consumer.commits == [{P0: 2}]
    rig.clock.advance(0.4)  # a second after the first commit
    rig.worker.step()
    assert rig.consumer.commits == [{P0: 2}, {P0: 3}]
    rig.redis.fail_if = None
    rig.clock.advance(0.5)  # past the retry's backoff, half an interval after the commit
    rig.worker.step()  # p3 acknowledged: nothing in flight, so it need not wait
    assert rig.consumer.commits == [{P0: 2}, {P0: 3}, {P0: 4}]


def test_a_failed_commit_is_retried_on_the_next_step() -> None:
    rig = Rig(max_size=1)
    rig.consumer.fail_commits = 1
    rig.consumer.queue = [record(0, post(0))]
    rig.worker.step()
    assert rig.consumer.committed() == {}
    rig.worker.step()
    assert rig.consumer.committed() == {P0: 1}


@pytest.mark.parametrize("n", [1, 7, 64, 200])
def test_verdict_count_equals_post_count(n: int) -> None:
    rig = Rig(max_size=5)
    texts = ["short", "a much longer post " * 5, "mid length post here"]
    rig.consumer.queue = [record(i, post(i, texts[i % 3])) for i in range(n)]
    rig.worker.step()
    assert sorted(v.post_id for v in rig.verdicts()) == sorted(f"p{i}" for i in range(n))
    assert len(rig.kafka.items) == n
    assert rig.consumer.committed() == {P0: n}


def test_dead_letters_not_acknowledged_at_shutdown_are_not_committed() -> None:
    rig = Rig(max_size=1, shutdown_grace_s=1.0)
    rig.dlq.failures = 10**6
    rig.consumer.queue = [record(0, b"{broken")]
    rig.worker.step()
    rig.worker.request_stop()
    rig.worker.run()
    assert rig.consumer.committed() == {}


def test_a_tokeniser_failure_on_one_post_dead_letters_only_that_post() -> None:
    class PickyModel(FakeModel):
        def prepare(self, texts: Sequence[str]) -> list:  # type: ignore[type-arg]
            if any("\x00" in t for t in texts):
                raise ValueError("cannot tokenise")
            return super().prepare(texts)

    rig = Rig(max_size=4, model=PickyModel())
    rig.consumer.queue = [record(0, post(0)), record(1, post(1, "bad\x00")), record(2, post(2))]
    rig.worker.step()
    assert sorted(v.post_id for v in rig.verdicts()) == ["p0", "p2"]
    assert [(d.reason, d.source.offset) for d in rig.letters()] == [
        (DeadLetterReason.MODEL_ERROR, 1)
    ]
    assert rig.consumer.committed() == {P0: 3}
