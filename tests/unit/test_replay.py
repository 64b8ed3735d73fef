"""The bounded consumer of a replay, without Kafka: an in-memory partitioned log stands in
for kafka-python's consumer (offsets by time, assign/seek/position, pause, a log start that
retention moves, as a consumer without a reset policy sees it)."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import OffsetOutOfRangeError
from kafka.structs import OffsetAndTimestamp

from tests.fakes import FakeModel, ListSink, ManualClock, SendingListSink
from worker.batcher import BatchLimits, MicroBatcher, Size
from worker.checkpoint import Partition
from worker.config import ConfigError, load_settings
from worker.flow import Prepared
from worker.loop import LoopConfig, Worker
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.replay import (
    LOST_TO_RETENTION,
    OUT_OF_WINDOW,
    BoundedConsumer,
    ReplayConfig,
    ReplayState,
    Span,
    Tally,
    TallyingDeadLetters,
    TallySink,
    parse_time,
    plan_spans,
)
from worker.replay_run import (
    ReplayOptions,
    _report,
    _state,
    replay_config,
    replay_settings,
    summary,
)
from worker.schema import Verdict

KRecord = namedtuple("KRecord", "topic partition offset timestamp key value headers")
T0 = 1_700_000_000_000
TOPIC = "posts"
P0, P1 = Partition(TOPIC, 0), Partition(TOPIC, 1)


class FakeLog:
    """A partitioned topic with the KafkaConsumer calls a BoundedConsumer makes."""

    def __init__(self, partitions: int = 2) -> None:
        self.logs: dict[int, list[KRecord]] = {p: [] for p in range(partitions)}
        self.pos: dict[TopicPartition, int] = {}
        self.assigned: list[TopicPartition] = []
        self.paused_tps: set[TopicPartition] = set()
        self.start: dict[int, int] = dict.fromkeys(self.logs, 0)  # log start: retention moves it

    def append(self, partition: int, ts: int, value: dict[str, Any] | bytes) -> None:
        log = self.logs[partition]
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        log.append(KRecord(TOPIC, partition, len(log), ts, b"k", raw, []))

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.logs) if topic == TOPIC else None

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.start[tp.partition] for tp in tps}

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp.partition]) for tp in tps}

    def offsets_for_times(self, times: dict[TopicPartition, int]) -> dict[Any, Any]:
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, t in times.items():
            kept = self.logs[tp.partition][self.start[tp.partition] :]
            hit = next((r for r in kept if r.timestamp >= t), None)
            out[tp] = None if hit is None else OffsetAndTimestamp(hit.offset, hit.timestamp, -1)
        return out

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos[tp] = offset

    def position(self, tp: TopicPartition) -> int | None:
        return self.pos.get(tp)

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[KRecord]]:
        """As kafka-python's with ``auto_offset_reset="none"``: a fetch below the log start
        raises OffsetOutOfRangeError({tp: offset})."""
        gone = {
            tp: self.pos[tp]
            for tp in self.assigned
            if tp not in self.paused_tps and self.pos[tp] < self.start[tp.partition]
        }
        if gone:
            raise OffsetOutOfRangeError(gone)
        out: dict[TopicPartition, list[KRecord]] = {}
        room = max_records
        for tp in self.assigned:
            if tp in self.paused_tps or room <= 0:
                continue
            got = self.logs[tp.partition][self.pos[tp] : self.pos[tp] + min(room, 3)]
            if got:
                out[tp] = got
                self.pos[tp] += len(got)
                room -= len(got)
        return out

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_tps.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_tps.difference_update(tps)


def post(i: int, text: str = "hello world") -> dict[str, Any]:
    return {"post_id": f"p{i}", "text": text}


def filled_log() -> FakeLog:
    """Partition 0: posts 0..9 at T0 + i s; partition 1: posts 10..19 at T0 + (i-10) s."""
    log = FakeLog()
    for i in range(20):
        text = "fake news here" if i % 5 == 0 else "hate this" if i % 7 == 0 else "hello"
        log.append(i // 10, T0 + (i % 10) * 1000, post(i, text))
    return log


def window_ids(log: FakeLog, lo: int, hi: int) -> set[str]:
    return {
        json.loads(r.value)["post_id"]
        for rs in log.logs.values()
        for r in rs
        if lo <= r.timestamp < hi and r.value.startswith(b"{")
    }


def new_state(log: FakeLog, lo: int | None, hi: int | None) -> ReplayState:
    return ReplayState("r1", TOPIC, lo, hi, plan_spans(log, TOPIC, lo, hi))


# --- time and planning -------------------------------------------------------------------
def test_parse_time_takes_rfc3339_and_epoch_milliseconds() -> None:
    assert parse_time("1700000000000") == T0
    assert parse_time("2023-11-14T22:13:20Z") == T0
    assert parse_time("2023-11-14T23:13:20+01:00") == T0
    assert parse_time("2023-11-14T22:13:20") == T0  # naive is UTC
    assert parse_time("2023-11-14T22:13:20.250Z") == T0 + 250
    with pytest.raises(ValueError, match="neither RFC 3339 nor epoch"):
        parse_time("yesterday")


def test_plan_includes_the_start_and_excludes_the_end_of_the_window() -> None:
    spans = plan_spans(filled_log(), TOPIC, T0 + 2000, T0 + 5000)
    assert spans == {P0: Span(2, 5), P1: Span(2, 5)}


def test_plan_ends_at_the_end_offset_when_the_window_reaches_past_it() -> None:
    log = filled_log()
    assert plan_spans(log, TOPIC, T0 + 8000, T0 + 10**9) == {P0: Span(8, 10), P1: Span(8, 10)}
    assert plan_spans(log, TOPIC, T0 + 8000, None) == {P0: Span(8, 10), P1: Span(8, 10)}
    assert plan_spans(log, TOPIC, None, T0 + 1000) == {P0: Span(0, 1), P1: Span(0, 1)}


def test_plan_of_a_window_after_the_last_record_is_empty() -> None:
    spans = plan_spans(filled_log(), TOPIC, T0 + 10**6, None)
    assert all(s.size == 0 for s in spans.values())


def test_plan_of_an_unknown_topic_fails() -> None:
    with pytest.raises(LookupError, match="nope"):
        plan_spans(filled_log(), "nope", T0, None)


# --- the bounded consumer ----------------------------------------------------------------
def drain(consumer: BoundedConsumer, limit: int = 100) -> list[Any]:
    got: list[Any] = []
    for _ in range(limit):
        if consumer.finished:
            break
        got += consumer.poll(10, 500)
    return got


def test_reads_each_span_once_and_finishes(tmp_path: Path) -> None:
    log = filled_log()
    state = new_state(log, T0 + 2000, T0 + 5000)
    consumer = BoundedConsumer(log, state, tmp_path / "s.json", Tally(), sleep=lambda _: None)
    assigned: list[set[Partition]] = []
    consumer.subscribe(lambda _: None, assigned.append)
    assert assigned == [{P0, P1}]
    got = drain(consumer)
    assert consumer.finished
    assert sorted((r.partition, r.offset) for r in got) == [
        (p, o) for p in (0, 1) for o in (2, 3, 4)
    ]
    assert consumer.lag({P0: 5, P1: 5}) == {P0: 0, P1: 0}
    assert consumer.poll(10, 500) == []  # finished: nothing more, even on a growing topic


def test_a_live_topic_still_ends_where_it_ended_at_start(tmp_path: Path) -> None:
    log = filled_log()
    state = new_state(log, T0, None)
    consumer = BoundedConsumer(log, state, tmp_path / "s.json", Tally(), sleep=lambda _: None)
    consumer.subscribe(lambda _: None, lambda _: None)
    for n in range(50):  # keeps growing while the replay reads
        log.append(0, T0 + 20_000 + n, post(100 + n))
        log.append(1, T0 + 20_000 + n, post(200 + n))
    got = drain(consumer)
    assert consumer.finished
    assert len(got) == 20
    assert {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)} <= log.paused_tps


def test_records_inside_the_span_but_outside_the_window_are_skipped_and_counted(
    tmp_path: Path,
) -> None:
    log = FakeLog(1)
    log.append(0, T0, post(0))
    log.append(0, T0 - 10_000, post(1))  # a producer clock behind, between two in the window
    log.append(0, T0 + 1, post(2))
    log.append(0, T0 + 5_000, post(3))
    tally = Tally()
    state = new_state(log, T0, T0 + 5_000)
    assert state.spans == {P0: Span(0, 3)}
    consumer = BoundedConsumer(log, state, tmp_path / "s.json", tally, sleep=lambda _: None)
    consumer.subscribe(lambda _: None, lambda _: None)
    assert [r.offset for r in drain(consumer)] == [0, 2]
    consumer.commit({P0: 3})
    assert state.counts[OUT_OF_WINDOW] == 1


def test_commit_writes_the_resume_file_and_a_new_consumer_resumes_there(tmp_path: Path) -> None:
    log = filled_log()
    path = tmp_path / "r1" / "state.json"
    state = new_state(log, T0, T0 + 6000)
    first = BoundedConsumer(log, state, path, Tally(), sleep=lambda _: None)
    first.subscribe(lambda _: None, lambda _: None)
    first.poll(10, 4)
    first.commit({P0: 3})
    assert not first.finished

    loaded = ReplayState.load(path)
    assert loaded is not None
    assert loaded.spans == state.spans and loaded.position(P0) == 3 and loaded.position(P1) == 0
    second = BoundedConsumer(log, loaded, path, Tally(), sleep=lambda _: None)
    second.subscribe(lambda _: None, lambda _: None)
    got = drain(second)
    assert sorted((r.partition, r.offset) for r in got) == [(0, 3), (0, 4), (0, 5)] + [
        (1, o) for o in range(6)
    ]


def test_a_finished_partition_is_not_assigned_again(tmp_path: Path) -> None:
    log = filled_log()
    state = new_state(log, T0, T0 + 3000)
    state.next = {P0: 3}
    consumer = BoundedConsumer(log, state, tmp_path / "s.json", Tally())
    assigned: list[set[Partition]] = []
    consumer.subscribe(lambda _: None, assigned.append)
    assert assigned == [{P1}]


def test_backpressure_resumes_only_unfinished_partitions(tmp_path: Path) -> None:
    log = filled_log()
    state = new_state(log, T0, None)
    state.spans[P1] = Span(0, 0)
    consumer = BoundedConsumer(log, state, tmp_path / "s.json", Tally())
    consumer.subscribe(lambda _: None, lambda _: None)
    consumer.pause()
    assert consumer.paused and consumer.poll(10, 500) == []
    consumer.resume()
    assert not consumer.paused and TopicPartition(TOPIC, 0) not in log.paused_tps
    assert len(consumer.poll(10, 500)) == 3


def test_rate_limits_the_records_handed_out(tmp_path: Path) -> None:
    log = filled_log()
    clock = ManualClock()
    sleeps: list[float] = []
    consumer = BoundedConsumer(
        log,
        new_state(log, T0, None),
        tmp_path / "s.json",
        Tally(),
        rate=2.0,
        clock=clock,
        sleep=sleeps.append,
    )
    consumer.subscribe(lambda _: None, lambda _: None)
    assert len(consumer.poll(10, 500)) == 1
    assert consumer.poll(10, 500) == [] and sleeps == [0.01]
    clock.advance(2.0)
    assert len(consumer.poll(10, 500)) == 4  # 2 s at 2/s: 4 more allowed


def test_tally_counts_an_outcome_once_its_offset_is_committed() -> None:
    tally = Tally()
    tally.note(P0, 0, "allow")
    tally.note(P0, 1, "block")
    tally.note(P0, 1, "block")  # redone: still one
    tally.note(P1, 0, "review")
    assert tally.settle({P0: 1}) == {"allow": 1}
    assert tally.settle({P0: 2}) == {"block": 1}
    assert tally.settle() == {"review": 1}
    assert tally.settle() == {}


# --- the same Worker on a bounded consumer ----------------------------------------------
class StoppingConsumer(BoundedConsumer):
    """Asks the worker to stop once it has handed out ``stop_after`` records: a replay
    interrupted (SIGTERM) mid-way, deterministically."""

    stop_after: int | None = None
    worker: Worker | None = None
    handed = 0

    def poll(self, timeout_ms: int, max_records: int) -> list[Any]:
        got = super().poll(timeout_ms, max_records)
        self.handed += len(got)
        if self.stop_after is not None and self.handed >= self.stop_after and self.worker:
            self.worker.request_stop()
        return got


def run_replay_worker(
    log: FakeLog, path: Path, state: ReplayState, redis: ListSink, stop_after: int | None = None
) -> BoundedConsumer:
    tally = Tally()
    consumer = StoppingConsumer(log, state, path, tally)
    batcher: MicroBatcher[Prepared] = MicroBatcher(
        BatchLimits(4, 0.01, 10_000), lambda p: Size(p.encoded.rows, p.encoded.tokens)
    )
    worker = Worker(
        consumer,
        batcher,
        Pipeline(FakeModel(), Policy(), Pseudonymiser(b"k"), replay_id="r1"),
        [redis, SendingListSink("kafka"), TallySink(tally)],
        TallyingDeadLetters(SendingListSink("dead_letter"), tally),
        LoopConfig(poll_timeout_ms=5, max_poll_records=2, shutdown_grace_s=5.0),
    )
    consumer.worker, consumer.stop_after = worker, stop_after
    worker.run(input_ended=lambda: consumer.finished)
    return consumer


def test_the_worker_replays_exactly_the_window_and_ends(tmp_path: Path) -> None:
    log = filled_log()
    log.logs[1].insert(4, log.logs[1][4]._replace(value=b"not json"))  # a dead letter
    log.logs[1] = [r._replace(offset=n) for n, r in enumerate(log.logs[1])]
    path = tmp_path / "state.json"
    redis = ListSink("redis")
    consumer = run_replay_worker(log, path, new_state(log, T0 + 2000, T0 + 7000), redis)
    assert consumer.finished
    consumer.finish()
    verdicts = [v for v in redis.items if isinstance(v, Verdict)]
    assert {v.post_id for v in verdicts} == window_ids(log, T0 + 2000, T0 + 7000)
    assert len(verdicts) == 10 and all(v.replay_id == "r1" for v in verdicts)
    saved = ReplayState.load(path)
    assert saved is not None
    assert sum(saved.counts[a] for a in ("allow", "review", "block")) == 10
    assert saved.counts["dead_letter:not_json"] == 1
    assert saved.counts["block"] == 2  # p5 and p15 say "fake"


def test_an_interrupted_replay_resumes_and_counts_every_post_once(tmp_path: Path) -> None:
    log = filled_log()
    path = tmp_path / "state.json"
    first = ListSink("redis")
    run_replay_worker(log, path, new_state(log, T0, T0 + 10_000), first, stop_after=6)
    state = ReplayState.load(path)
    assert state is not None and state.done == 6  # what was handed out is done and saved
    assert sum(state.counts.values()) == 6
    second = ListSink("redis")
    consumer = run_replay_worker(log, path, state, second)
    assert consumer.finished
    consumer.finish()
    done = {v.post_id for v in [*first.items, *second.items] if isinstance(v, Verdict)}
    assert done == {f"p{i}" for i in range(20)}
    final = ReplayState.load(path)
    assert final is not None and final.done == final.total == 20
    assert sum(final.counts[a] for a in ("allow", "review", "block")) == 20


# --- where a replay writes ---------------------------------------------------------------
def test_replay_writes_to_its_own_topic_and_prefix_by_default() -> None:
    settings = load_settings(metrics_port=0)
    target = replay_settings(settings, ReplayOptions(T0, None), "r9")
    assert target.output_topic == "verdicts.replay"
    assert target.redis_key_prefix == "modstream:verdict:replay:r9:"
    assert target.dlq_topic == "posts.dlq.replay"
    assert target.input_topic == settings.input_topic and target.group_id == settings.group_id


def test_writing_over_live_verdicts_needs_the_flag() -> None:
    settings = load_settings(metrics_port=0)
    with pytest.raises(ConfigError, match="--overwrite-live"):
        replay_settings(settings, ReplayOptions(T0, None, output_topic="verdicts"), "r9")
    with pytest.raises(ConfigError, match="--overwrite-live"):
        replay_settings(
            settings, ReplayOptions(T0, None, redis_key_prefix="modstream:verdict:"), "r9"
        )
    live = replay_settings(settings, ReplayOptions(T0, None, overwrite_live=True), "r9")
    assert (live.output_topic, live.redis_key_prefix) == ("verdicts", "modstream:verdict:")


# --- the command line ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday"], "--from/--to: 'yesterday' is neither"),
        (["--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"], "before --to"),
        (["--from", "0", "--rate", "0"], "--rate must be positive"),
    ],
)
def test_replay_refuses_a_bad_window_before_connecting(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.cli import main

    assert main(["replay", *args]) == 2
    assert message in capsys.readouterr().err


# --- records written late: timestamps out of offset order (CreateTime) --------------------
def late_log() -> FakeLog:
    """One partition; by offset: a +0, b +2.1 s, late +1.5 s, c +3 s, early +2.5 s, d +1.9 s."""
    log = FakeLog(1)
    for pid, dt in [("a", 0), ("b", 2100), ("late", 1500), ("c", 3000), ("early", 2500)]:
        log.append(0, T0 + dt, {"post_id": pid, "text": "x"})
    log.append(0, T0 + 1900, {"post_id": "d", "text": "x"})
    return log


def replayed_ids(log: FakeLog, state: ReplayState, path: Path) -> tuple[list[str], int]:
    """The post ids a bounded consumer hands out over ``state``, and the out-of-window count."""
    consumer = BoundedConsumer(log, state, path, Tally(), sleep=lambda _: None)
    consumer.subscribe(lambda _: None, lambda _: None)
    ids = [json.loads(r.value)["post_id"] for r in drain(consumer)]
    consumer.finish()
    return ids, state.counts[OUT_OF_WINDOW]


@pytest.mark.parametrize(
    ("lo", "hi", "lateness_ms", "span", "ids"),
    [
        (T0, T0 + 2000, 0, Span(0, 1), ["a"]),  # the end at the first record stamped >= to
        (T0, T0 + 2000, 1000, Span(0, 3), ["a", "late"]),  # up to the first >= to + 1 s
        (T0, T0 + 2000, 60_000, Span(0, 6), ["a", "late", "d"]),  # none that late: the end
        (T0 + 1000, T0 + 2000, 0, Span(1, 1), []),  # start and end on the same record: empty
        (T0 + 1000, T0 + 2000, 60_000, Span(1, 6), ["late", "d"]),
        (T0 + 2000, T0 + 4000, 60_000, Span(1, 6), ["b", "c", "early"]),
    ],
)
def test_a_span_reaches_records_written_up_to_the_lateness_after_the_window(
    tmp_path: Path, lo: int, hi: int, lateness_ms: int, span: Span, ids: list[str]
) -> None:
    log = late_log()
    state = ReplayState("r1", TOPIC, lo, hi, plan_spans(log, TOPIC, lo, hi, lateness_ms))
    assert state.spans == {P0: span}
    got, out_of_window = replayed_ids(log, state, tmp_path / "s.json")
    assert got == ids  # filtered by timestamp: each record in exactly one of two windows
    assert out_of_window == span.size - len(ids)


def test_a_span_starts_at_the_end_offset_read_when_its_first_record_came_after(
    tmp_path: Path,
) -> None:
    class LateEnds(FakeLog):
        """End offsets read before three more records were written."""

        def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            return {tp: len(self.logs[tp.partition]) - 3 for tp in tps}

    log = LateEnds(1)
    for i in range(10):
        log.append(0, T0 + i * 1000, post(i))
    assert plan_spans(log, TOPIC, T0 + 8000, None) == {P0: Span(7, 7)}
    assert plan_spans(log, TOPIC, T0 + 2000, T0 + 9000, 0) == {P0: Span(2, 7)}


# --- offsets that retention removed before the replay read them ---------------------------
def test_a_resume_after_retention_goes_on_from_the_log_start_and_counts_the_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = filled_log()
    path = tmp_path / "state.json"
    state = new_state(log, T0, T0 + 10_000)
    state.next = {P0: 3, P1: 8}  # committed before a crash
    log.start = {0: 6, 1: 5}  # retention, while the replay was down
    tally = Tally()
    consumer = BoundedConsumer(log, state, path, tally, sleep=lambda _: None)
    consumer.subscribe(lambda _: None, lambda _: None)
    got = sorted((r.partition, r.offset) for r in drain(consumer))
    assert got == [(0, o) for o in range(6, 10)] + [(1, 8), (1, 9)]  # nothing jumped to the end
    assert "offsets 3..5 of posts[0] left the log" in caplog.text
    consumer.commit({P0: 7, P1: 10})
    assert state.counts[LOST_TO_RETENTION] == 3  # partition 1 lost nothing: it was past 5
    consumer.finish()
    assert ReplayState.load(path).counts[LOST_TO_RETENTION] == 3  # type: ignore[union-attr]


def test_offsets_removed_while_the_replay_reads_are_skipped_and_counted(tmp_path: Path) -> None:
    log = filled_log()
    state = new_state(log, T0, T0 + 10_000)
    tally = Tally()
    consumer = BoundedConsumer(log, state, tmp_path / "s.json", tally, sleep=lambda _: None)
    consumer.subscribe(lambda _: None, lambda _: None)
    first = consumer.poll(10, 500)  # offsets 0..2 of each partition
    assert {r.offset for r in first} == {0, 1, 2}
    tally.note(P0, 3, "allow")  # noted, never committed: it is lost with its record
    log.start = {0: 7, 1: 0}
    got = sorted((r.partition, r.offset) for r in drain(consumer))
    assert got == [(0, 7), (0, 8), (0, 9)] + [(1, o) for o in range(3, 10)]
    consumer.commit({P0: 3})
    assert state.counts[LOST_TO_RETENTION] == 0  # settles only once a commit passes it
    consumer.commit({P0: 10, P1: 10})
    assert state.counts == {LOST_TO_RETENTION: 4}


def test_a_gap_over_the_rest_of_a_span_finishes_the_partition(tmp_path: Path) -> None:
    log = filled_log()
    state = new_state(log, T0 + 2000, T0 + 5000)
    log.start = {0: 8, 1: 0}
    consumer = BoundedConsumer(log, state, tmp_path / "s.json", Tally(), sleep=lambda _: None)
    consumer.subscribe(lambda _: None, lambda _: None)
    got = drain(consumer)
    assert consumer.finished and {r.partition for r in got} == {1}
    consumer.finish()
    assert state.counts[LOST_TO_RETENTION] == 3  # offsets 2..4, nothing before or after


def test_an_out_of_range_fetch_that_is_not_retention_is_raised(tmp_path: Path) -> None:
    class Truncated(FakeLog):
        def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[KRecord]]:
            raise OffsetOutOfRangeError({TopicPartition(TOPIC, 0): 5})

    log = Truncated()
    log.logs = filled_log().logs
    consumer = BoundedConsumer(
        log, new_state(log, T0, None), tmp_path / "s.json", Tally(), sleep=lambda _: None
    )
    consumer.subscribe(lambda _: None, lambda _: None)
    with pytest.raises(OffsetOutOfRangeError):
        consumer.poll(10, 500)


def test_tally_counts_a_lost_range_once() -> None:
    tally = Tally()
    tally.note(P0, 4, "allow")
    tally.note_lost(P0, 3, 9)
    tally.note_lost(P0, 3, 9)  # the same gap seen again
    assert tally.settle({P0: 3}) == {}
    assert tally.settle({P0: 4}) == {LOST_TO_RETENTION: 6}


# --- a resume holds the replay to its models and outputs ----------------------------------
def start_or_resume(
    log: FakeLog, path: Path, model: str = "model-A", **options: Any
) -> ReplayState:
    """``_state`` as ``run_replay`` calls it, for a FakeModel of version ``model``."""
    settings = load_settings(metrics_port=0)
    opts = ReplayOptions(T0, T0 + 5000, replay_id="r1", **options)
    target = replay_settings(settings, opts, "r1")
    config = replay_config(target, opts, FakeModel(version=model), None)
    return _state(log, target, opts, "r1", path, config)


def test_the_first_start_records_models_and_outputs_in_the_resume_file(tmp_path: Path) -> None:
    path = tmp_path / "r1" / "state.json"
    start_or_resume(filled_log(), path, lateness_ms=1500)
    saved = json.loads(path.read_text())
    assert {k: saved[k] for k in ReplayConfig.__dataclass_fields__} == {
        "model_version": "model-A",
        "candidate_version": None,
        "output_topic": "verdicts.replay",
        "redis_key_prefix": "modstream:verdict:replay:r1:",
        "dead_letter_topic": "posts.dlq.replay",
        "overwrite_live": False,
        "lateness_ms": 1500,
    }
    state = start_or_resume(filled_log(), path, lateness_ms=1500)  # the same: resumes
    assert state.config is not None and state.config.model_version == "model-A"


@pytest.mark.parametrize(
    ("model", "options", "named"),
    [
        ("model-B", {}, ["model_version: 'model-A' -> 'model-B'"]),
        (
            "model-B",
            {"overwrite_live": True},
            [
                "model_version: 'model-A' -> 'model-B'",
                "output_topic: 'verdicts.replay' -> 'verdicts'",
                "redis_key_prefix: 'modstream:verdict:replay:r1:' -> 'modstream:verdict:'",
                "dead_letter_topic: 'posts.dlq.replay' -> 'posts.dlq'",
                "overwrite_live: False -> True",
            ],
        ),
        ("model-A", {"output_topic": "other"}, ["output_topic: 'verdicts.replay' -> 'other'"]),
        ("model-A", {"lateness_ms": 0}, ["lateness_ms: 60000 -> 0"]),
    ],
)
def test_a_resume_with_another_model_or_output_is_refused(
    tmp_path: Path, model: str, options: dict[str, Any], named: list[str]
) -> None:
    path = tmp_path / "r1" / "state.json"
    start_or_resume(filled_log(), path)
    before = path.read_text()
    with pytest.raises(ConfigError, match="replay r1 was started otherwise") as err:
        start_or_resume(filled_log(), path, model, **options)
    for difference in named:
        assert difference in str(err.value)
    assert path.read_text() == before


def test_a_resume_with_another_candidate_is_refused(tmp_path: Path) -> None:
    settings = load_settings(metrics_port=0)
    opts = ReplayOptions(T0, None, replay_id="r1")
    target = replay_settings(settings, opts, "r1")
    path = tmp_path / "state.json"
    model = FakeModel(version="live")
    _state(filled_log(), target, opts, "r1", path, replay_config(target, opts, model, None))
    later = replay_config(target, opts, model, FakeModel(version="cand"))
    with pytest.raises(ConfigError, match="candidate_version: None -> 'cand'"):
        _state(filled_log(), target, opts, "r1", path, later)


def test_a_resume_file_without_models_and_outputs_is_read_but_not_resumed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r1" / "state.json"
    start_or_resume(filled_log(), path)
    old = json.loads(path.read_text())
    for key in ReplayConfig.__dataclass_fields__:  # as an older modstream wrote it
        del old[key]
    path.write_text(json.dumps(old))
    loaded = ReplayState.load(path)
    assert loaded is not None and loaded.config is None and loaded.spans
    with pytest.raises(ConfigError, match="does not record the models and outputs"):
        start_or_resume(filled_log(), path)


# --- the summary ------------------------------------------------------------------------------
def test_the_summary_counts_the_offsets_lost_and_states_the_lateness(tmp_path: Path) -> None:
    path = tmp_path / "r1" / "state.json"
    state = start_or_resume(filled_log(), path, lateness_ms=2500)
    assert state.total == 16  # [+0 s, +5 s) and 2.5 s late: offsets 0..7 of each partition
    state.counts.update({"allow": 10, OUT_OF_WINDOW: 3, LOST_TO_RETENTION: 3})
    target = replay_settings(load_settings(metrics_port=0), ReplayOptions(T0, None), "r1")
    result = summary(state, target, FakeModel(version="model-A"))
    assert result["lost_to_retention"] == 3 and result["lateness_seconds"] == 2.5
    assert result["records"] == 16 == result["verdicts"] + result["out_of_window"] + 3


def test_the_summary_is_written_before_the_shadow_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.shadow_report

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("report failed")

    monkeypatch.setattr(worker.shadow_report, "build_report", broken)
    state = start_or_resume(filled_log(), tmp_path / "r1" / "state.json")
    state.counts.update({"allow": 10})
    opts = ReplayOptions(T0, None, replay_id="r1", state_dir=tmp_path)
    target = replay_settings(load_settings(metrics_port=0), opts, "r1")
    model, candidate = FakeModel(version="model-A"), FakeModel(version="cand")
    with pytest.raises(RuntimeError, match="report failed"):
        _report(state, target, model, candidate, opts, tmp_path / "r1", lambda _: None)
    written = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert written["verdicts"] == 10 and "shadow" not in written


def test_replay_refuses_a_negative_lateness(capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    assert main(["replay", "--from", "0", "--lateness", "-1"]) == 2
    assert "--lateness must be a number of seconds" in capsys.readouterr().err
