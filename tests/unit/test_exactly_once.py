"""Exactly-once mode with the loop inline: a fake transactional producer whose sinks only
become visible (to a ``read_committed`` reader) when the transaction commits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from kafka.errors import KafkaError

from tests.fakes import ManualClock, SendingListSink, record
from tests.unit.test_loop import P0, P1, LogConsumer, Rig, post
from worker.app import RestartsInPlace
from worker.checkpoint import Partition
from worker.loop import TransactionAbortError
from worker.schema import DeadLetter, Verdict
from worker.sinks import SinkError
from worker.transactions import Transactions


class FakeTxnProducer:
    """Sends join the open transaction; commit makes them visible with the offsets."""

    def __init__(self) -> None:
        self.open = False
        self.pending: list[object] = []
        self.visible: list[object] = []
        self.offsets: dict[Partition, int] = {}
        self.calls: list[str] = []
        self.fail_commit = 0
        self.fail_abort = False  # fenced
        self.groups: list[Any] = []

    def _fail_if_fenced(self) -> None:
        if self.fail_abort:  # as kafka-python's producer, fenced: a plain KafkaError
            raise KafkaError(
                "Cannot execute transactional method because we are in an error state: "
                "[Error 90] ProducerFencedError"
            )

    def init_transactions(self) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")
        self._fail_if_fenced()
        if self.open:
            raise KafkaError("Invalid transition from IN_TRANSACTION to IN_TRANSACTION")
        self.open = True

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any) -> None:
        assert self.open
        self.groups.append(group_metadata)
        self._staged = {Partition(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}

    def commit_transaction(self) -> None:
        assert self.open
        self.calls.append("commit")
        if self.fail_commit:
            self.fail_commit -= 1
            raise KafkaError("coordinator moved")
        self.visible += self.pending
        self.pending = []
        self.offsets.update(getattr(self, "_staged", {}))
        self._staged = {}
        self.open = False

    def abort_transaction(self) -> None:
        self.calls.append("abort")
        self._fail_if_fenced()
        if not self.open:  # as kafka-python, when there is no transaction to abort
            raise KafkaError("Invalid transition from READY to ABORTING_TRANSACTION")
        self.pending = []
        self._staged = {}
        self.open = False


class TxnSink(SendingListSink):
    """A Kafka sink whose acknowledged items wait in the producer's open transaction."""

    def __init__(self, producer: FakeTxnProducer, name: str, failures: int = 0) -> None:
        super().__init__(name, failures)
        self.producer = producer

    def write_batch(self, items: Sequence[object]) -> None:
        assert self.producer.open, "a send outside a transaction"
        super().write_batch(items)
        self.producer.pending.extend(items)


class EosRig(Rig):
    def __init__(
        self, kafka_failures: int = 0, kafka_sink: type[TxnSink] | None = None, **kwargs: Any
    ) -> None:
        self.producer = FakeTxnProducer()
        self.txn = Transactions(self.producer, lambda: "group-generation-1", timeout_s=5)
        self.txn.start()
        super().__init__(
            kafka=(kafka_sink or TxnSink)(self.producer, "kafka", kafka_failures),
            dlq=TxnSink(self.producer, "dead_letter"),
            transactions=self.txn,
            commit_interval_s=1.0,
            **kwargs,
        )

    def visible_ids(self) -> list[str]:
        return sorted(v.post_id for v in self.producer.visible if isinstance(v, Verdict))


def test_offsets_commit_with_the_transaction_at_the_barrier_never_through_the_consumer() -> None:
    rig = EosRig(max_size=4)
    rig.consumer.queue = [record(i, post(i)) for i in range(3)] + [record(3, b"{broken")]
    rig.worker.step()
    assert rig.producer.visible == []  # written, but the transaction is still open
    assert len(rig.verdicts()) == 3  # Redis has them already (outside the transaction)
    rig.clock.advance(1.0)
    rig.worker.step()  # the interval is up: barrier on (fetching paused) ...
    assert rig.consumer.paused
    rig.worker.step()  # ... nothing in flight: commit, fetch again
    assert rig.visible_ids() == ["p0", "p1", "p2"]
    assert [d for d in rig.producer.visible if isinstance(d, DeadLetter)] != []
    assert rig.producer.offsets == {P0: 4}
    assert rig.producer.groups == ["group-generation-1"]
    assert rig.consumer.commits == []  # never the consumer's own commit
    assert not rig.consumer.paused
    assert rig.producer.open  # the next transaction is open


def test_the_barrier_waits_for_work_in_flight() -> None:
    rig = EosRig(max_size=2, redis=None)
    rig.redis.failures = 3  # Redis is down for a while: p0, p1 not acknowledged
    rig.consumer.queue = [record(0, post(0)), record(1, post(1))]
    rig.worker.step()
    rig.clock.advance(1.0)
    rig.worker.step()  # barrier: but p0, p1 are in flight
    assert rig.producer.offsets == {}
    rig.consumer.queue = [record(2, post(2))]
    rig.worker.step()  # paused: nothing new is fetched during the barrier
    assert rig.consumer.queue != []
    for _ in range(20):
        rig.clock.advance(1.0)
        rig.worker.step()
        if rig.producer.offsets:
            break
    assert rig.producer.offsets == {P0: 2}
    assert rig.visible_ids() == ["p0", "p1"]


def test_a_failed_send_aborts_and_the_records_are_read_again_and_seen_once() -> None:
    rig = EosRig(max_size=4, kafka_failures=1)
    records = [record(i, post(i)) for i in range(4)]
    rig.consumer.queue = list(records)
    rig.worker.step()  # the Kafka send fails: the transaction is poisoned
    rig.worker.step()  # ... so the loop aborts and rewinds
    assert "abort" in rig.producer.calls
    assert rig.consumer.rewound[-1] == {P0: 0}
    rig.consumer.queue = list(records)  # the consumer reads from the rewound position
    for _ in range(4):
        rig.clock.advance(1.0)
        rig.worker.step()
    assert rig.visible_ids() == ["p0", "p1", "p2", "p3"]  # once each, after the redo
    assert rig.producer.offsets == {P0: 4}


def test_a_failed_commit_aborts_and_rewinds_to_the_last_committed_offsets() -> None:
    rig = EosRig(max_size=4)
    rig.consumer.queue = [record(0, post(0)), record(0, post(10), partition=1)]
    for _ in range(3):
        rig.clock.advance(1.0)
        rig.worker.step()
    assert rig.producer.offsets == {P0: 1, P1: 1}
    rig.producer.fail_commit = 1
    rig.consumer.queue = [record(1, post(1)), record(2, post(2))]
    for _ in range(3):
        rig.clock.advance(1.0)
        rig.worker.step()
    assert rig.producer.calls[-2:] == ["abort", "begin"]
    assert rig.consumer.rewound[-1] == {P0: 1}  # P1 had nothing new
    assert rig.visible_ids() == ["p0", "p10"]  # the failed transaction's posts vanished
    assert rig.producer.offsets == {P0: 1, P1: 1}


def test_a_revocation_aborts_the_open_transaction_instead_of_committing() -> None:
    rig = EosRig(max_size=4)
    rig.consumer.queue = [record(0, post(0)), record(0, post(10), partition=1)]
    rig.worker.step()
    assert rig.consumer.on_revoked and rig.consumer.on_assigned
    rig.consumer.on_revoked({P0, P1})  # an eager rebalance takes everything
    rig.consumer.on_assigned({P0})
    rig.clock.advance(1.0)
    rig.worker.step()
    assert "abort" in rig.producer.calls and "commit" not in rig.producer.calls
    assert rig.producer.visible == [] and rig.producer.offsets == {}
    assert rig.consumer.rewound[-1] == {P0: 0}  # P0 came back: read it again
    rig.consumer.queue = [record(0, post(0))]
    for _ in range(3):
        rig.clock.advance(1.0)
        rig.worker.step()
    assert rig.visible_ids() == ["p0"] and rig.producer.offsets == {P0: 1}


def eos_log(n: int, **kwargs: Any) -> tuple[EosRig, LogConsumer]:
    log = LogConsumer({P0: [record(i, post(i)) for i in range(n)]})
    return EosRig(consumer=log, **kwargs), log


def all_ids(rig: EosRig) -> list[str]:
    """Every verdict a read_committed reader sees, duplicates kept."""
    return sorted(v.post_id for v in rig.producer.visible if isinstance(v, Verdict))


def test_a_partition_given_straight_back_redoes_its_transaction_before_newer_records() -> None:
    """The poll that runs an eager rebalance returns records from the kept position: they
    are read again after the aborted transaction's records, not written ahead of them (and
    again with them) into the next transaction."""
    rig, log = eos_log(6, max_size=3)
    rig.worker.step()  # 0, 1, 2 written into the open transaction
    log.rebalance(("revoked", {P0}), ("assigned", {P0}))
    rig.worker.step()  # aborted; the poll that rebalanced returned 3, 4, 5
    assert log.rewound[-1] == {P0: 0}
    for _ in range(4):
        rig.clock.advance(1.0)
        rig.worker.step()
    assert all_ids(rig) == [f"p{i}" for i in range(6)]  # once each
    assert rig.producer.offsets == {P0: 6}


def test_an_abort_after_a_rebalance_rewinds_to_the_first_record_not_committed() -> None:
    rig, log = eos_log(9, max_size=3)
    rig.worker.step()  # 0, 1, 2 into the open transaction
    log.rebalance(("revoked", {P0}), ("assigned", {P0}))
    rig.kafka.failures = 10**6  # the output topic refuses for a while ...
    rig.worker.step()  # aborted by the rebalance; 3, 4, 5 returned with it
    rig.worker.step()  # 0, 1, 2 read again; the send fails: aborted again
    assert log.rewound[-1] == {P0: 0}
    rig.kafka.failures = 0  # ... and recovers
    for _ in range(6):
        rig.clock.advance(1.0)
        rig.worker.step()
    assert all_ids(rig) == [f"p{i}" for i in range(9)]
    assert rig.producer.offsets == {P0: 9}


def test_a_revocation_rewinds_kept_partitions_past_what_the_same_poll_returned() -> None:
    """The abort a revocation causes rewinds every partition with work in the transaction,
    kept ones too: the records that poll returned for them are read again, not kept."""
    log = LogConsumer(
        {
            P0: [record(i, post(i)) for i in range(6)],
            P1: [record(i, post(100 + i), partition=1) for i in range(3)],
        }
    )
    rig = EosRig(consumer=log, max_size=3)
    rig.worker.step()  # p0-p2 and p100-p102 into the open transaction
    log.rebalance(("revoked", {P1}))  # P1 goes, P0 stays (cooperative): its work is aborted
    rig.worker.step()  # the poll returned 3, 4, 5 of P0
    assert log.rewound[-1] == {P0: 0, P1: 0}
    for _ in range(4):
        rig.clock.advance(1.0)
        rig.worker.step()
    assert all_ids(rig) == [f"p{i}" for i in range(6)]
    assert rig.producer.offsets == {P0: 6}


def test_an_abort_that_fails_stops_the_worker() -> None:
    rig = EosRig(max_size=4, kafka_failures=1)
    rig.producer.fail_abort = True
    rig.consumer.queue = [record(0, post(0))]
    with pytest.raises(TransactionAbortError, match="ProducerFencedError"):
        for _ in range(3):
            rig.worker.step()
    # Fenced: no tries to begin the next transaction until the timeout, it stops at once.
    assert rig.producer.calls == ["init", "begin", "abort"]


def test_a_transaction_the_broker_already_aborted_ends_the_worker_for_a_new_producer() -> None:
    """A sink outage past the transaction timeout: the broker aborts the transaction, the
    next send fails (InvalidProducerEpoch) and kafka-python bumps the producer's epoch,
    which ends the transaction client-side and keeps its unacknowledged records for the
    next one. The abort fails; no transaction begins on that producer (its stale records
    would land in it): the worker stops, for ``modstream run`` to start it again in place
    with a new producer."""

    class EpochBumpingSink(TxnSink):
        def write_batch(self, items: Sequence[object]) -> None:
            if self.failures:  # the send fails, and the producer ends the transaction
                self.failures -= 1
                self.producer.open = False  # its records stay behind, for the next one
                raise SinkError("InvalidProducerEpochError")
            super().write_batch(items)

    rig = EosRig(max_size=4, kafka_failures=1, kafka_sink=EpochBumpingSink)
    rig.consumer.queue = [record(i, post(i)) for i in range(2)]
    with pytest.raises(TransactionAbortError, match="READY to ABORTING_TRANSACTION"):
        rig.worker.step()
    assert rig.producer.calls == ["init", "begin", "abort"]  # no begin on this producer
    assert rig.producer.visible == [] and rig.producer.offsets == {}


def test_stop_commits_the_transaction_once_everything_is_written() -> None:
    rig = EosRig(max_size=10)
    rig.consumer.queue = [record(i, post(i)) for i in range(3)]
    rig.worker.step()
    rig.worker.request_stop()
    rig.worker.run()
    assert rig.visible_ids() == ["p0", "p1", "p2"]
    assert rig.producer.offsets == {P0: 3}


def test_stop_with_a_sink_down_aborts_instead_of_committing_part() -> None:
    rig = EosRig(max_size=10, shutdown_grace_s=0.5)
    rig.redis.failures = 10_000
    rig.consumer.queue = [record(i, post(i)) for i in range(3)]
    rig.worker.step()
    rig.worker.request_stop()
    rig.worker.run()
    assert rig.producer.calls[-2:] == ["abort", "begin"]
    assert rig.producer.visible == [] and rig.producer.offsets == {}


def test_a_transactional_call_that_hangs_fails_after_the_timeout() -> None:
    import threading

    from kafka.errors import KafkaTimeoutError

    release = threading.Event()

    class Hanging(FakeTxnProducer):
        def commit_transaction(self) -> None:
            release.wait(10)

    producer = Hanging()
    txn = Transactions(producer, lambda: "g", timeout_s=0.2)
    txn.start()
    try:
        with pytest.raises(KafkaTimeoutError, match="commit_transaction"):
            txn.commit({P0: 1}, "g")
    finally:
        release.set()


def test_a_whole_abort_keeps_its_deadline_while_the_writer_holds_the_transaction() -> None:
    """Shutdown with the broker down: the writer holds the transaction's lock in a write
    that runs into its sink timeout, and the abort itself would hang. ``within_s`` bounds
    the whole abort, the wait for the lock included, instead of the lock's wait and then
    the timeout of each call."""
    import threading
    import time

    from kafka.errors import KafkaTimeoutError

    release = threading.Event()

    class Hanging(FakeTxnProducer):
        def abort_transaction(self) -> None:
            release.wait(10)

    txn = Transactions(Hanging(), lambda: "g", timeout_s=30)
    txn.start()
    holding, done = threading.Event(), threading.Event()

    def writer() -> None:
        with txn.writing():
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        holding.wait(5)
        started = time.monotonic()
        with pytest.raises(KafkaTimeoutError, match="abort: the writer still held"):
            txn.abort(within_s=0.2)
        assert time.monotonic() - started < 2
        done.set()
        thread.join(5)
        started = time.monotonic()
        with pytest.raises(KafkaTimeoutError, match="abort_transaction did not finish within"):
            txn.abort(within_s=0.3)
        assert time.monotonic() - started < 2  # not the 30 s timeout of the call
    finally:
        done.set()
        release.set()
        thread.join(5)


def test_the_transaction_at_exit_gets_the_grace_left_at_least_the_final_bound() -> None:
    """While running, a commit or abort keeps each call's sink timeout (and waits for the
    writer's attempt in hand); the one at exit is bounded by what is left of the grace, at
    least FINAL_COMMIT_S."""
    from worker.loop import FINAL_COMMIT_S

    rig = EosRig(max_size=10, shutdown_grace_s=20.0)
    bounds: list[tuple[str, float | None]] = []
    commit, abort = rig.txn.commit, rig.txn.abort

    def recorded_commit(offsets: Any, group: Any, within_s: float | None = None) -> None:
        bounds.append(("commit", within_s))
        commit(offsets, group, within_s)

    def recorded_abort(within_s: float | None = None) -> None:
        bounds.append(("abort", within_s))
        abort(within_s)

    rig.txn.commit = recorded_commit  # type: ignore[method-assign]
    rig.txn.abort = recorded_abort  # type: ignore[method-assign]
    rig.consumer.queue = [record(i, post(i)) for i in range(3)]
    rig.worker.step()
    rig.clock.advance(1.5)
    rig.worker.step()  # the barrier
    rig.worker.step()  # everything written: the transaction commits
    assert bounds == [("commit", None)]
    rig.redis.failures = 10_000
    rig.consumer.queue = [record(i, post(i)) for i in range(3, 6)]
    rig.worker.step()
    rig.worker.request_stop()
    rig.worker.run()  # the grace runs out with the sink down: the abort gets the final bound
    assert bounds[-1] == ("abort", FINAL_COMMIT_S)
    assert rig.producer.calls[-2:] == ["abort", "begin"]
    assert rig.visible_ids() == ["p0", "p1", "p2"]


def test_a_worker_starts_again_in_place_unless_its_abort_failed_a_minute_before() -> None:
    clock = ManualClock()
    restarts = RestartsInPlace(min_gap_s=60.0, clock=clock)
    assert restarts.allow()
    clock.advance(59.0)
    assert not restarts.allow()  # failing again at once: another instance holds the id
    clock.advance(2.0)
    assert restarts.allow()  # a minute after the last restart: a new outage, say
