"""The worker with its stages on real threads: the guarantees hold while they run.
No assertion on speed: waits are generous deadlines for liveness only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.fakes import (
    FakeConsumer,
    FakeModel,
    HangingSink,
    ListSink,
    SendingListSink,
    record,
)
from worker.batcher import BatchLimits, MicroBatcher, Size
from worker.checkpoint import Partition
from worker.flow import Prepared
from worker.loop import LoopConfig, Worker
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.schema import Verdict
from worker.stages import ModelBrokenError

P0, P1 = Partition("posts", 0), Partition("posts", 1)
LIVENESS_S = 30.0


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIVENESS_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


class Threaded:
    def __init__(
        self,
        redis: ListSink | None = None,
        model: FakeModel | None = None,
        max_size: int = 4,
        replicas: int = 1,
        **config: object,
    ) -> None:
        model = model or FakeModel()
        model.concurrency = replicas  # the worker runs one model replica per call at once
        self.consumer = FakeConsumer(real_time=True)
        self.redis = redis or ListSink("redis")
        self.kafka = SendingListSink("kafka")
        self.dlq = SendingListSink("dead_letter")
        batcher: MicroBatcher[Prepared] = MicroBatcher(
            BatchLimits(max_size, 0.01, 10_000), lambda p: Size(p.encoded.rows, p.encoded.tokens)
        )
        self.worker = Worker(
            self.consumer,
            batcher,
            Pipeline(model, Policy(), Pseudonymiser(b"k")),
            [self.redis, self.kafka],
            self.dlq,
            LoopConfig(**{"poll_timeout_ms": 5, **config}),  # type: ignore[arg-type]
        )
        self.error: BaseException | None = None

    @contextmanager
    def running(self) -> Iterator[threading.Thread]:
        def target() -> None:
            try:
                self.worker.run()
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self.error = exc

        thread = threading.Thread(target=target, name="test-worker")
        thread.start()
        try:
            yield thread
        finally:
            self.worker.request_stop()
            thread.join(LIVENESS_S)
            assert not thread.is_alive(), "the worker did not stop"

    def verdict_ids(self) -> list[str]:
        return [v.post_id for v in self.redis.items if isinstance(v, Verdict)]


def post(i: int, text: str = "hello world") -> dict[str, object]:
    return {"post_id": f"p{i}", "text": text}


REPLICAS = pytest.mark.parametrize("replicas", [1, 2])


@REPLICAS
def test_every_post_gets_one_verdict_and_every_offset_is_committed(replicas: int) -> None:
    rig = Threaded(max_size=16, replicas=replicas)
    texts = ["short one", "a somewhat longer post about the weather " * 3, "fake news maybe"]
    rig.consumer.queue = [
        record(i // 2, post(i, texts[i % 3]), partition=i % 2) for i in range(400)
    ]
    with rig.running():
        wait_until(lambda: rig.consumer.committed() == {P0: 200, P1: 200}, "all commits")
    assert rig.error is None
    assert sorted(rig.verdict_ids()) == sorted(f"p{i}" for i in range(400))
    assert len(rig.kafka.items) == 400


def test_shutdown_returns_within_the_grace_time_when_a_sink_hangs() -> None:
    hung = HangingSink("redis")
    rig = Threaded(redis=hung, shutdown_grace_s=0.2, stop_join_s=0.2)
    rig.consumer.queue = [record(i, post(i)) for i in range(8)]
    try:
        with rig.running() as thread:
            wait_until(hung.entered.is_set, "the sink to hang")
            rig.worker.request_stop()
            thread.join(LIVENESS_S)  # returns although the writer is still stuck
            assert not thread.is_alive()
        assert rig.error is None
        assert rig.consumer.committed() == {}
    finally:
        hung.release()


def test_backpressure_pauses_while_the_writer_is_stuck_and_resumes_after() -> None:
    hung = HangingSink("redis")
    rig = Threaded(redis=hung, max_pending=8, max_poll_records=10)
    rig.consumer.queue = [record(i, post(i)) for i in range(40)]
    with rig.running():
        wait_until(hung.entered.is_set, "the sink to hang")
        wait_until(lambda: rig.consumer.paused, "consumption to pause")
        left = len(rig.consumer.queue)
        time.sleep(0.05)
        assert len(rig.consumer.queue) == left  # nothing fetched while paused
        hung.release()
        wait_until(lambda: rig.consumer.committed() == {P0: 40}, "all commits")
        assert not rig.consumer.paused
    assert sorted(rig.verdict_ids()) == sorted(f"p{i}" for i in range(40))


@REPLICAS
def test_a_revoked_partitions_in_flight_batch_is_neither_written_nor_committed(
    replicas: int,
) -> None:
    hung = HangingSink("redis")
    rig = Threaded(redis=hung, max_size=4, replicas=replicas)
    rig.consumer.queue = [record(i, post(i)) for i in range(4)]
    with rig.running():
        wait_until(hung.entered.is_set, "the first batch (partition 0) to reach the sink")
        # Partition 1's batch is scored and waits for the writer, which is busy with the
        # first (were it waiting already, the writer would have taken it along).
        rig.consumer.queue += [record(i, post(10 + i), partition=1) for i in range(4)]
        wait_until(lambda: len(rig.worker._to_writer) == 1, "partition 1's batch to be scored")
        assert rig.consumer.on_revoked is not None
        rig.consumer.on_revoked({P1})
        wait_until(lambda: rig.worker._generations.current(P1) == 1, "the revoke to apply")
        hung.release()
        wait_until(lambda: rig.consumer.committed().get(P0) == 4, "partition 0's commit")
        time.sleep(0.05)
    assert P1 not in rig.consumer.committed()
    assert sorted(rig.verdict_ids()) == ["p0", "p1", "p2", "p3"]


@REPLICAS
def test_a_broken_model_stops_the_threaded_worker(replicas: int) -> None:
    rig = Threaded(model=FakeModel(fail_on="*"), model_failure_limit=2, replicas=replicas)
    rig.consumer.queue = [record(i, post(i)) for i in range(6)]
    with rig.running() as thread:
        thread.join(LIVENESS_S)
    assert isinstance(rig.error, ModelBrokenError)
    assert not rig.worker.ready(60)
    assert rig.consumer.committed() == {}


@REPLICAS
@pytest.mark.parametrize("model_queue", [1, 3])
def test_results_stay_exact_whatever_the_queue_sizes(model_queue: int, replicas: int) -> None:
    rig = Threaded(max_size=3, model_queue=model_queue, writer_queue=model_queue, replicas=replicas)
    rig.consumer.queue = [record(i, post(i, "x " * (i % 7 + 1))) for i in range(100)]
    with rig.running():
        wait_until(lambda: rig.consumer.committed() == {P0: 100}, "all commits")
    assert sorted(rig.verdict_ids()) == sorted(f"p{i}" for i in range(100))


@pytest.mark.parametrize("replicas", [2, 3])
def test_model_replicas_score_batches_side_by_side_never_more_than_the_model_allows(
    replicas: int,
) -> None:
    model = FakeModel(delay_s=0.02)
    rig = Threaded(model=model, max_size=4, replicas=replicas)
    rig.consumer.queue = [
        record(i // 2, post(i, "x " * (i % 5 + 1)), partition=i % 2) for i in range(240)
    ]
    with rig.running():
        wait_until(lambda: rig.consumer.committed() == {P0: 120, P1: 120}, "all commits")
        names = {t.name for t in threading.enumerate()}
        assert {f"modstream-model-{i}" for i in range(replicas)} <= names
    assert rig.error is None
    assert model.most_at_once == replicas  # they overlapped, and no more than allowed
    assert sorted(rig.verdict_ids()) == sorted(f"p{i}" for i in range(240))
    assert len(rig.kafka.items) == 240  # once each, whatever order batches finished in
