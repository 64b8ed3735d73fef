"""An eager rebalance that gives a partition straight back, on the real broker.

kafka-python 3.0.12 runs the rebalance inside ``poll()``, keeps the fetch position of a
partition the member keeps, and that same poll returns records from it: past the work in
flight, which the worker drops and reads again. The loop runs inline, against real Kafka
and Redis; a third verdict sink, in memory, holds one post back so that the work before the
rebalance is still in flight when it comes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from tests.fakes import FakeModel, ListSink, ManualClock
from tests.integration.helpers import create_topics, events, settings_for, to_bytes, wait_for
from worker.batcher import BatchLimits, MicroBatcher, Size
from worker.checkpoint import Partition
from worker.config import Settings
from worker.consumer import InputConsumer, Record
from worker.flow import Prepared
from worker.kafka_client import make_consumer, make_producer
from worker.loop import LoopConfig, Worker
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.sinks.kafka import DeadLetterSink, KafkaVerdictSink
from worker.sinks.redis import RedisVerdictSink

pytestmark = pytest.mark.integration

BATCH = 5  # records per poll, and per batch: a full poll is scored in the step that took it


def step_until(worker: Worker, reached: Callable[[], bool], what: str, steps: int = 20) -> None:
    for _ in range(steps):
        worker.step()
        if reached():
            return
    raise AssertionError(f"{what}: not after {steps} steps")


class ObservedInput(InputConsumer):
    """The real input consumer; notes what each poll returned and the rebalance calls."""

    def __init__(self, consumer: KafkaConsumer, topic: str) -> None:
        super().__init__(consumer, topic, commit_timeout_s=10.0)
        self.polls: list[list[Record]] = []
        self.rebalances: list[tuple[str, set[Partition]]] = []

    def subscribe(
        self,
        on_revoked: Callable[[set[Partition]], None],
        on_assigned: Callable[[set[Partition]], None],
    ) -> None:
        def revoked(parts: set[Partition]) -> None:
            self.rebalances.append(("revoked", set(parts)))
            on_revoked(parts)

        def assigned(parts: set[Partition]) -> None:
            self.rebalances.append(("assigned", set(parts)))
            on_assigned(parts)

        super().subscribe(revoked, assigned)

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        records = super().poll(timeout_ms, max_records)
        self.polls.append(records)
        return records


@contextmanager
def member_of_another_topic(settings: Settings, topic: str) -> Iterator[None]:
    """A second member of the group that subscribes to another topic only: its join starts
    an eager rebalance, and the range assignor gives the input partition back to the first
    member, which keeps its fetch position."""
    other = make_consumer(settings)
    other.subscribe([topic])
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            other.poll(timeout_ms=100)

    thread = threading.Thread(target=run, name="other-member", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        other.close(autocommit=False)


def test_records_polled_with_a_rebalance_that_gives_the_partition_back_wait_for_the_dropped(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
) -> None:
    settings = settings_for(services, run_id)
    other_topic = f"{settings.input_topic}-other"
    create_topics(settings, partitions=1)
    create_topics(settings, partitions=1, topics=[other_topic])
    posts = events(run_id, 20)
    client = redis.Redis.from_url(services.redis_url)
    tp = TopicPartition(settings.input_topic, 0)
    p0 = Partition(settings.input_topic, 0)

    with ExitStack() as stack:
        producer = make_producer(settings)
        stack.callback(producer.close)

        def send(first: int, end: int) -> None:
            for event in posts[first:end]:
                producer.send(settings.input_topic, value=to_bytes(event))
            producer.flush()

        reader = make_consumer(settings)  # asks the broker for the group's commits only
        stack.callback(reader.close)

        held = f"{run_id}-5"
        gate = ListSink("gate", fail_if=lambda items: any(v.post_id == held for v in items))

        def unverdicted_below_commit() -> list[int]:
            """Offsets committed past whose verdict not every sink holds."""
            committed = reader.committed(tp, timeout_ms=5000) or 0
            acked = {v.post_id for v in gate.items}  # type: ignore[attr-defined]
            return [
                i
                for i in range(committed)
                if f"{run_id}-{i}" not in acked
                or not client.exists(f"{settings.redis_key_prefix}{run_id}-{i}")
            ]

        kafka = make_consumer(settings, heartbeat_interval_ms=100)
        source = ObservedInput(kafka, settings.input_topic)
        stack.callback(source.close)
        clock = ManualClock()
        batcher: MicroBatcher[Prepared] = MicroBatcher(
            BatchLimits(BATCH, 1.0, 10_000),
            lambda p: Size(p.encoded.rows, p.encoded.tokens),
            clock=clock,
        )
        worker = Worker(
            source,
            batcher,
            Pipeline(FakeModel(), Policy(), Pseudonymiser(b"k")),
            [
                RedisVerdictSink(client, settings.redis_key_prefix, 600),
                KafkaVerdictSink(producer, settings.output_topic, 10.0),
                gate,
            ],
            DeadLetterSink(producer, settings.dlq_topic, 10.0),
            # Long enough for the poll that rebalances to join, sync and fetch.
            LoopConfig(poll_timeout_ms=3000, max_poll_records=BATCH),
            clock=clock,
            threaded=False,
        )
        source.subscribe(worker._on_revoked, worker._on_assigned)

        send(0, 5)
        step_until(worker, lambda: worker.committed() == {p0: 5}, "posts 0-4 committed")
        send(5, 8)
        step_until(worker, lambda: sum(map(len, source.polls)) == 8, "posts 5-7 polled")
        # 5, 6, 7 are in flight: the gate refuses their batch, retried once the clock moves.
        send(8, 20)
        with member_of_another_topic(settings, other_topic):
            # Wait until this member has heard of the rebalance (its heartbeat runs on the
            # client's own thread): then its next poll joins, and returns records with it.
            wait_for(lambda: kafka._coordinator.need_rejoin(), 30, "the rebalance to start")
            clock.advance(2.0)  # the commit interval is up: a commit goes out at once
            seen = len(source.rebalances)
            worker.step()
            assert source.rebalances[seen:] == [("revoked", {p0}), ("assigned", {p0})]
            # The precondition: the poll that ran the rebalance returned records from the
            # position kept through it, past 5-7.
            assert [r.offset for r in source.polls[-1]] == list(range(8, 8 + BATCH))
            assert unverdicted_below_commit() == []
            for _ in range(3):  # a crash or another rebalance now must not lose 5-7
                clock.advance(2.0)
                worker.step()
                assert unverdicted_below_commit() == []
            assert reader.committed(tp, timeout_ms=5000) == 5
        gate.fail_if = None
        for _ in range(10):
            clock.advance(10.0)  # past the retry's backoff
            worker.step()
            assert unverdicted_below_commit() == []
            if reader.committed(tp, timeout_ms=5000) == 20:
                break
        assert reader.committed(tp, timeout_ms=5000) == 20
