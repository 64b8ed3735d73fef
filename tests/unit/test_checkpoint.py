import pytest
from kafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from prometheus_client import REGISTRY

from worker.checkpoint import OffsetOrderError, OffsetTracker, Partition
from worker.consumer import InputConsumer

P0, P1 = Partition("posts", 0), Partition("posts", 1)


def test_commit_stops_at_the_first_unfinished_offset() -> None:
    t = OffsetTracker()
    for off in (5, 6, 7):
        t.track(P0, off)
    t.done(P0, 6)
    assert t.committable() == {}
    t.done(P0, 5)
    assert t.committable() == {P0: 7}
    t.done(P0, 7)
    assert t.committable() == {P0: 8}
    assert t.in_flight() == 0


def test_only_moved_partitions_are_committed_again() -> None:
    t = OffsetTracker()
    t.track(P0, 0)
    t.track(P1, 10)
    t.done(P0, 0)
    t.done(P1, 10)
    t.mark_committed(t.committable())
    assert t.committable() == {}
    t.track(P1, 11)
    t.done(P1, 11)
    assert t.committable() == {P1: 12}


def test_forgotten_partitions_ignore_late_results() -> None:
    t = OffsetTracker()
    t.track(P0, 3)
    t.forget([P0])
    assert t.done(P0, 3) is False
    assert t.committable() == {} and t.in_flight() == 0


def test_an_offset_not_above_the_last_tracked_is_refused_until_the_partition_is_reset() -> None:
    """The done prefix follows the order offsets are tracked in: one tracked below another
    of its partition could be committed past, so it is refused, until a revocation
    (forget) or an abort (discard) ends what was tracked and the partition reads again."""
    t = OffsetTracker()
    t.track(P0, 5)
    t.track(P0, 6)
    t.track(P1, 2)  # each partition on its own
    t.done(P0, 5)
    t.done(P0, 6)  # done and gone from the tracker: still the last one tracked
    for stale in (6, 4):
        with pytest.raises(OffsetOrderError):
            t.track(P0, stale)
    t.track(P0, 9)  # a gap (compaction, transaction markers) is fine
    t.forget([P0])
    t.track(P0, 5)  # revoked: read again from the rewind
    t.mark_committed(t.committable())
    t.discard([P0, P1])
    t.track(P0, 5)  # aborted: read again from the committed offset
    t.track(P1, 2)
    assert t.in_flight() == 2


def test_checkpoint_commits_only_the_acknowledged_prefix_and_retries_a_failed_commit() -> None:
    from tests.fakes import FakeConsumer
    from worker.checkpoint import Checkpoint

    consumer = FakeConsumer(fail_commits=1)
    cp = Checkpoint(consumer)
    for off in range(3):
        cp.tracker.track(P0, off)
    cp.done(P0, 0)
    cp.done(P0, 2)
    assert cp.commit() is False  # the broker refused: nothing marked committed
    assert cp.commit() is True
    assert consumer.commits == [{P0: 1}]
    assert cp.commit() is True and consumer.commits == [{P0: 1}]  # nothing new
    cp.done(P0, 1)
    cp.tracker.track(P1, 7)
    cp.done(P1, 7)
    assert cp.commit(only={P1}) is True
    assert consumer.commits[-1] == {P1: 8}
    cp.commit()
    assert consumer.committed() == {P0: 3, P1: 8}


class _RecordingKafkaConsumer:
    """Stands in for KafkaConsumer's commit only: what InputConsumer asks of it."""

    def __init__(self) -> None:
        self.timeouts_ms: list[int] = []

    def commit(self, offsets: object, timeout_ms: int | None = None) -> None:
        assert timeout_ms is not None, "a commit without a bound blocks up to 305 s"
        self.timeouts_ms.append(timeout_ms)


def test_the_input_consumer_bounds_every_commit_by_its_commit_timeout() -> None:
    kafka = _RecordingKafkaConsumer()
    consumer = InputConsumer(kafka, "posts", commit_timeout_s=30.0)  # type: ignore[arg-type]
    consumer.commit({P0: 3})
    consumer.commit({P0: 4}, timeout_s=12.5)  # what is left of a grace time
    consumer.commit({P0: 5}, timeout_s=90.0)  # never past its own bound
    consumer.commit({})  # nothing to commit: no request
    assert kafka.timeouts_ms == [30_000, 12_500, 30_000]


class _FailingKafkaConsumer:
    """Stands in for KafkaConsumer's poll: raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def poll(self, timeout_ms: int, max_records: int) -> object:
        raise self.error


def _consume_errors() -> float:
    return REGISTRY.get_sample_value("modstream_errors_total", {"stage": "consume"}) or 0.0


def test_a_retriable_fetch_error_is_counted_and_polled_again() -> None:
    error = KafkaConnectionError("broker moved")
    consumer = InputConsumer(_FailingKafkaConsumer(error), "posts", commit_timeout_s=30.0)  # type: ignore[arg-type]
    before = _consume_errors()
    assert consumer.poll(100, 500) == []
    assert _consume_errors() == before + 1


def test_a_fetch_error_that_will_not_pass_is_counted_and_raised() -> None:
    error = TopicAuthorizationFailedError("not allowed")
    consumer = InputConsumer(_FailingKafkaConsumer(error), "posts", commit_timeout_s=30.0)  # type: ignore[arg-type]
    before = _consume_errors()
    with pytest.raises(TopicAuthorizationFailedError):
        consumer.poll(100, 500)
    assert _consume_errors() == before + 1
