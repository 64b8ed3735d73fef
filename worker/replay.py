"""A bounded input for replays: the same :class:`~worker.consumer.Consumer` protocol as the
live group member, over partitions it assigns itself, between offsets fixed when it starts.

- :func:`plan_spans` turns a time window into per-partition offset spans
  (``offsets_for_times``; the end allows for records written late, and is capped at the
  end offset at start, so a replay of a live topic still ends).
- :class:`BoundedConsumer` reads those spans, drops records past the end or outside the
  window, pauses each partition once it reaches its end, and reports :attr:`finished`.
  Its :meth:`~BoundedConsumer.commit` never touches Kafka (no group is used at all): it
  saves the progress to a resume file (:class:`ReplayState`), so a replay killed at any
  point continues from its last commit. Offsets that retention removed before they were
  read are skipped from the log start on and counted, never jumped over silently.
- :class:`Tally` counts what a replay decided, settled at commit, so the counts of a
  resumed replay are exact (nothing counted twice, nothing lost).
- :class:`ReplayConfig` is what a resume must repeat (models, outputs, lateness).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kafka import TopicPartition
from kafka.errors import OffsetOutOfRangeError

from worker.checkpoint import Partition
from worker.consumer import Record
from worker.schema import DeadLetter, Verdict

log = logging.getLogger(__name__)

OUT_OF_WINDOW = "out_of_window"  # tally key: records in the offset span, timestamp outside
LOST_TO_RETENTION = "lost_to_retention"  # tally key: offsets of the span gone before read


def parse_time(text: str) -> int:
    """RFC 3339 (a naive time is UTC) or epoch milliseconds -> epoch milliseconds."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither RFC 3339 nor epoch milliseconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Span:
    """Offsets ``[start, end)`` of one partition to replay."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class OffsetSource(Protocol):
    """The part of kafka-python's ``KafkaConsumer`` a bounded consumer uses."""

    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    def offsets_for_times(self, timestamps: dict[TopicPartition, int]) -> dict[Any, Any]: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    def position(self, partition: TopicPartition) -> int | None: ...
    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...


def plan_spans(
    source: OffsetSource,
    topic: str,
    from_ms: int | None,
    to_ms: int | None,
    lateness_ms: int = 0,
) -> dict[Partition, Span]:
    """Per partition, the offsets that may hold records timestamped in ``[from_ms, to_ms)``:
    from the first record at or after ``from_ms`` to the first at or after
    ``to_ms + lateness_ms``, or to the end offset now when there is none (or when ``to_ms``
    is None). Record timestamps (CreateTime) are not in offset order: a record stamped
    inside the window may be written after one stamped past its end, and ``lateness_ms``
    is how long after the window's end such a record is still looked for. The records
    of a span are filtered by timestamp as they are read (:class:`BoundedConsumer`)."""
    parts = source.partitions_for_topic(topic)
    if not parts:
        raise LookupError(f"topic {topic} does not exist or has no partitions")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    lows = source.beginning_offsets(tps)
    highs = source.end_offsets(tps)
    starts = source.offsets_for_times(dict.fromkeys(tps, from_ms)) if from_ms is not None else {}
    ends = (
        source.offsets_for_times(dict.fromkeys(tps, to_ms + lateness_ms))
        if to_ms is not None
        else {}
    )
    spans = {}
    for tp in tps:
        high = highs[tp]
        if from_ms is None:
            start = lows[tp]
        else:
            found = starts.get(tp)
            # None: nothing that recent; past ``high``: written since the end offsets were read
            start = high if found is None else min(found.offset, high)
        found_end = ends.get(tp)
        end = high if found_end is None else min(found_end.offset, high)
        # The end is clamped up to the start, never the start down to the end.
        spans[Partition(topic, tp.partition)] = Span(start, max(start, end))
    return spans


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """What a replay scores with, where it writes and how its spans were planned: recorded
    at its first start, so that a resume cannot mix two models' verdicts, or write part of
    them somewhere else. Its fields are keys of the resume file."""

    model_version: str
    candidate_version: str | None  # --compare-with's model; None without one
    output_topic: str
    redis_key_prefix: str
    dead_letter_topic: str
    overwrite_live: bool
    lateness_ms: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayConfig | None:
        """None when ``data`` lacks any field (a file written before they were recorded)."""
        if any(f.name not in data for f in fields(cls)):
            return None
        candidate = data["candidate_version"]
        return cls(
            model_version=str(data["model_version"]),
            candidate_version=None if candidate is None else str(candidate),
            output_topic=str(data["output_topic"]),
            redis_key_prefix=str(data["redis_key_prefix"]),
            dead_letter_topic=str(data["dead_letter_topic"]),
            overwrite_live=bool(data["overwrite_live"]),
            lateness_ms=int(data["lateness_ms"]),
        )

    def differences(self, now: ReplayConfig) -> list[str]:
        """``"name: then -> now"`` for each field that differs."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} -> {getattr(now, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(now, f.name)
        ]


@dataclass
class ReplayState:
    """What a replay must remember to resume: its window, its spans (fixed at the first
    start) and, per partition, the next offset to process; plus the settled counts and the
    configuration to hold a resume to (None: a file from before it was recorded)."""

    replay_id: str
    topic: str
    from_ms: int | None
    to_ms: int | None
    spans: dict[Partition, Span]
    next: dict[Partition, int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # run time of the earlier attempts
    config: ReplayConfig | None = None

    def position(self, tp: Partition) -> int:
        return self.next.get(tp, self.spans[tp].start)

    @property
    def total(self) -> int:
        return sum(s.size for s in self.spans.values())

    @property
    def done(self) -> int:
        """Offsets processed (committed) so far, over every partition."""
        return sum(self.position(tp) - s.start for tp, s in self.spans.items())

    def to_json(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id,
            "topic": self.topic,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "partitions": {
                str(tp.partition): {"start": s.start, "end": s.end, "next": self.position(tp)}
                for tp, s in sorted(self.spans.items())
            },
            "counts": dict(self.counts),
            "seconds": self.seconds,
            **({} if self.config is None else self.config.to_json()),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayState:
        topic = str(data["topic"])
        parts = {Partition(topic, int(p)): v for p, v in data["partitions"].items()}
        return cls(
            replay_id=str(data["replay_id"]),
            topic=topic,
            from_ms=data["from_ms"],
            to_ms=data["to_ms"],
            spans={tp: Span(int(v["start"]), int(v["end"])) for tp, v in parts.items()},
            next={tp: int(v["next"]) for tp, v in parts.items()},
            counts=Counter({str(k): int(n) for k, n in data.get("counts", {}).items()}),
            seconds=float(data.get("seconds", 0.0)),
            config=ReplayConfig.from_json(data),
        )

    def save(self, path: Path) -> None:
        """Atomically: a kill at any moment leaves the old or the new file, never half."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(self.to_json(), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ReplayState | None:
        if not path.exists():
            return None
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


class Tally:
    """Outcome per record (action, dead-letter reason, out of window) until its offset is
    committed, then counted for good. Written from the writer and main threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # offset -> (outcome, how many offsets it counts for: more than 1 for a lost range)
        self._pending: dict[Partition, dict[int, tuple[str, int]]] = {}

    def note(self, tp: Partition, offset: int, outcome: str) -> None:
        with self._lock:
            self._pending.setdefault(tp, {})[offset] = (outcome, 1)

    def note_lost(self, tp: Partition, start: int, end: int) -> None:
        """Offsets ``[start, end)`` are gone from the log: one entry, settled like a record
        at ``start``. An outcome noted inside the range is dropped: that record was never
        committed and cannot be read again, so it counts as lost, once."""
        with self._lock:
            pending = self._pending.setdefault(tp, {})
            for offset in [o for o in pending if start <= o < end]:
                del pending[offset]
            pending[start] = (LOST_TO_RETENTION, end - start)

    def settle(self, offsets: Mapping[Partition, int] | None = None) -> Counter[str]:
        """Count and forget the outcomes below each committed offset (all when None)."""
        counted: Counter[str] = Counter()
        with self._lock:
            for tp, pending in self._pending.items():
                limit = None if offsets is None else offsets.get(tp)
                if offsets is not None and limit is None:
                    continue
                settled = [o for o in pending if limit is None or o < limit]
                for offset in settled:
                    outcome, n = pending.pop(offset)
                    counted[outcome] += n
        return counted


class TallySink:
    """A verdict "sink" that only notes each verdict's action in the tally."""

    name = "tally"

    def __init__(self, tally: Tally) -> None:
        self._tally = tally

    def write_batch(self, items: Sequence[Verdict]) -> None:
        for v in items:
            self._tally.note(
                Partition(v.source_topic, v.source_partition), v.source_offset, v.action.value
            )

    def close(self) -> None:
        """Nothing to release."""


class TallyingDeadLetters:
    """Wraps the dead-letter sink: notes each letter's reason once the sink holds it."""

    def __init__(self, inner: Any, tally: Tally) -> None:
        self._inner = inner
        self._tally = tally
        self.name = inner.name

    def write_batch(self, items: Sequence[DeadLetter]) -> None:
        self._inner.write_batch(items)
        for d in items:
            tp = Partition(d.source.topic, d.source.partition)
            self._tally.note(tp, d.source.offset, f"dead_letter:{d.reason.value}")

    def close(self) -> None:
        self._inner.close()


def _tp(p: Partition) -> TopicPartition:
    return TopicPartition(p.topic, p.partition)


class BoundedConsumer:
    """Reads each partition's span once and ends; commits go to the resume file.

    Called from the main loop's thread only, like every :class:`Consumer`. ``rate``: most
    records per second handed to the loop (None: as fast as the worker goes)."""

    def __init__(
        self,
        source: OffsetSource,
        state: ReplayState,
        state_path: Path,
        tally: Tally,
        *,
        rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._source = source
        self.state = state
        # Every key present from the start: the progress bar's thread reads this dict.
        state.next = {tp: state.position(tp) for tp in state.spans}
        self._path = state_path
        self._tally = tally
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._paused = False
        self._open = {tp for tp, s in state.spans.items() if state.position(tp) < s.end}
        self._handed = 0  # records handed to the loop (for the rate limit)
        self._started = clock()

    # --- the Consumer protocol -------------------------------------------------------------
    def subscribe(
        self,
        on_revoked: Callable[[set[Partition]], None],
        on_assigned: Callable[[set[Partition]], None],
    ) -> None:
        """Assign the unfinished partitions, each at its resume position (or at the log
        start, where retention removed the records there); no group."""
        todo = sorted(self._open)
        self._source.assign([_tp(tp) for tp in todo])
        for tp in todo:
            self._source.seek(_tp(tp), self.state.position(tp))
        self._skip_lost({tp: self.state.position(tp) for tp in todo})
        on_assigned(set(todo))

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        if not self._open:
            self._sleep(timeout_ms / 1000)  # what a poll of paused partitions would do
            return []
        allowed = self._allowed(max_records)
        if allowed == 0:
            self._sleep(timeout_ms / 1000)
            return []
        try:
            batches = self._source.poll(timeout_ms=timeout_ms, max_records=allowed)
        except OffsetOutOfRangeError as exc:  # the consumer has no reset policy: see replay_run
            self._out_of_range(exc)
            return []
        out = [r for tp, records in batches.items() for r in self._within(tp, records)]
        self._close_finished()
        self._handed += len(out)
        return out

    def commit(self, offsets: dict[Partition, int], timeout_s: float | None = None) -> None:
        """Save the progress (and the outcomes it settles) to the resume file (a local
        write: ``timeout_s`` does not apply)."""
        self.state.next.update(offsets)
        self.state.counts.update(self._tally.settle(offsets))
        self.state.save(self._path)

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        if not self._paused:
            self._source.pause(*(_tp(tp) for tp in self._open))
            self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._source.resume(*(_tp(tp) for tp in self._open))
            self._paused = False

    def lag(self, positions: dict[Partition, int]) -> dict[Partition, int]:
        """Records left to read in each partition's span."""
        return {
            tp: max(0, s.end - positions.get(tp, self.state.position(tp)))
            for tp, s in self.state.spans.items()
        }

    def rewind(self, offsets: dict[Partition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._open:
                self._source.seek(_tp(tp), offset)

    # --- bounded -----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """Every partition was read up to its end (what was read may still be in flight)."""
        return not self._open

    def finish(self) -> None:
        """Record the replay as complete: every span read, every outcome counted."""
        for tp, span in self.state.spans.items():
            self.state.next[tp] = max(self.state.position(tp), span.end)
        self.state.counts.update(self._tally.settle())
        self.state.save(self._path)

    def _within(self, tp: TopicPartition, records: Iterable[Any]) -> Iterable[Record]:
        p = Partition(tp.topic, tp.partition)
        end = self.state.spans[p].end
        lo, hi = self.state.from_ms, self.state.to_ms
        for r in records:
            if r.offset >= end:
                break
            ts = r.timestamp
            if ts is not None and ((lo is not None and ts < lo) or (hi is not None and ts >= hi)):
                self._tally.note(p, r.offset, OUT_OF_WINDOW)  # settled with the next commit
                continue
            yield Record(r.topic, r.partition, r.offset, ts, r.key, r.value, list(r.headers or []))

    def _out_of_range(self, exc: OffsetOutOfRangeError) -> None:
        """A fetch asked for offsets no longer in the log (retention or delete-records ran
        while the replay read): go on from the log start. Anything else is re-raised."""
        asked = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        positions = {Partition(tp.topic, tp.partition): int(o) for tp, o in asked.items()}
        if not positions:
            positions = {
                tp: pos for tp in self._open if (pos := self._source.position(_tp(tp))) is not None
            }
        if not self._skip_lost(positions):
            raise exc

    def _skip_lost(self, positions: Mapping[Partition, int]) -> bool:
        """Move each partition whose position lies before its log start to the log start
        (at most its span's end), noting the offsets skipped as lost. True if any moved."""
        behind = {tp: pos for tp, pos in positions.items() if tp in self._open}
        if not behind:
            return False
        lows = self._source.beginning_offsets([_tp(tp) for tp in behind])
        moved = False
        for tp, pos in behind.items():
            resume_at = min(lows[_tp(tp)], self.state.spans[tp].end)
            if resume_at <= pos:
                continue
            log.warning(
                "replay %s: offsets %d..%d of %s[%d] left the log before they were read "
                "(retention or delete-records): %d counted as lost_to_retention",
                self.state.replay_id,
                pos,
                resume_at - 1,
                tp.topic,
                tp.partition,
                resume_at - pos,
            )
            self._tally.note_lost(tp, pos, resume_at)
            self._source.seek(_tp(tp), resume_at)
            moved = True
        self._close_finished()
        return moved

    def _close_finished(self) -> None:
        done = [
            tp
            for tp in self._open
            if (pos := self._source.position(_tp(tp))) is not None
            and pos >= self.state.spans[tp].end
        ]
        if done:
            self._source.pause(*(_tp(tp) for tp in done))  # a live topic: fetch no further
            self._open.difference_update(done)

    def _allowed(self, max_records: int) -> int:
        if self._rate is None:
            return max_records
        budget = int(self._rate * (self._clock() - self._started)) + 1 - self._handed
        return max(0, min(max_records, budget))
