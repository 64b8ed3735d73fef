"""In-memory stand-ins for unit tests: a model, a consumer and sinks. Integration tests use
real Kafka and Redis instead; these only exist so the loop's logic is tested in milliseconds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from models.base import Encoded, Scores
from worker.checkpoint import Partition
from worker.consumer import Record
from worker.sinks import SinkError

# Series the ops dashboards rely on; the health and restart tests check they are served.
REQUIRED_METRICS = (
    "modstream_events_consumed_total",
    "modstream_verdicts_total",
    "modstream_dead_letters_total",
    "modstream_batch_size_bucket",
    "modstream_inference_seconds_bucket",
    "modstream_end_to_end_latency_seconds_bucket",
    "modstream_errors_total",
    "modstream_batch_padded_tokens_bucket",
    "modstream_batch_padding_ratio_bucket",
    "modstream_stage_seconds_bucket",
)


class FakeModel:
    """Scores from keywords: 'fake' in the text -> P(fake)=0.97, 'hate' -> negative.

    Tokenises one token per word plus two special tokens; a post longer than
    ``max_length`` gets several windows (rows), scored as one post. ``fail_on``: a word that
    makes ``predict_encoded`` raise for any batch holding it (``"*"``: every batch).
    ``first_id``: its first word id; two fakes with different ones tokenise alike texts
    into different ids, so one cannot read the other's tokens (as two real tokenizers)."""

    version = "fake-1"
    concurrency = 1
    labels: Mapping[str, Sequence[str]] = {
        "sentiment": ["negative", "neutral", "positive"],
        "misinformation": ["real", "fake"],
    }
    policy: Mapping[str, float] = {"block_fake": 0.9, "review_fake": 0.5, "review_negative": 0.8}

    def __init__(
        self,
        fail_on: str | None = None,
        max_length: int = 128,
        *,
        version: str = "fake-1",
        policy: Mapping[str, float] | None = None,
        first_id: int = 3,
        concurrency: int = 1,
        delay_s: float = 0.0,
    ) -> None:
        self.calls: list[int] = []  # posts per predict_encoded call
        self.concurrency = concurrency
        self.delay_s = delay_s  # each predict_encoded call takes at least this long
        self.running = 0  # predict_encoded calls in progress
        self.most_at_once = 0
        self._lock = threading.Lock()
        self.prepared: list[int] = []  # posts per prepare call
        self.fail_on = fail_on
        self.max_length = max_length
        self.version = version
        if policy is not None:
            self.policy = policy
        self._first_id = first_id
        self._ids: dict[str, int] = {}
        self._words: dict[int, str] = {}

    def padded_shape(self, rows: int, width: int) -> tuple[int, int]:
        return rows, width

    def _id(self, word: str) -> int:
        if word not in self._ids:
            self._ids[word] = len(self._ids) + self._first_id  # 1, 2: the special tokens
            self._words[self._ids[word]] = word
        return self._ids[word]

    def prepare(self, texts: Sequence[str]) -> list[Encoded]:
        self.prepared.append(len(texts))
        out = []
        room = self.max_length - 2
        for text in texts:
            ids = [self._id(w) for w in text.split()] or [0]
            windows = tuple((1, *ids[i : i + room], 2) for i in range(0, len(ids), room))
            out.append(Encoded(windows))
        return out

    def _words_of(self, item: Encoded) -> set[str]:
        return {self._words[t] for w in item.windows for t in w if t in self._words}

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            return self._predict(items)
        finally:
            with self._lock:
                self.running -= 1

    def _predict(self, items: Sequence[Encoded]) -> list[Scores]:
        self.calls.append(len(items))
        words = [self._words_of(i) for i in items]
        if self.fail_on is not None and any(
            self.fail_on in w or self.fail_on == "*" for w in words
        ):
            raise RuntimeError("model exploded")
        return [self._scores(w) for w in words]

    @staticmethod
    def _scores(words: set[str]) -> Scores:
        p_fake = 0.97 if "fake" in words else 0.6 if "maybe" in words else 0.02
        neg = 0.9 if "hate" in words else 0.1
        rest = 1.0 - neg
        return {
            "sentiment": {"negative": neg, "neutral": rest / 2, "positive": rest / 2},
            "misinformation": {"real": 1.0 - p_fake, "fake": p_fake},
        }

    def predict(self, texts: Sequence[str]) -> list[Scores]:
        return self.predict_encoded(self.prepare(texts))


def record(
    offset: int,
    value: bytes | dict[str, object] | None,
    partition: int = 0,
    topic: str = "posts",
    timestamp_ms: int | None = 1_700_000_000_000,
) -> Record:
    raw = json.dumps(value).encode() if isinstance(value, dict) else value
    return Record(topic, partition, offset, timestamp_ms, b"k", raw, [("trace", b"1")])


@dataclass
class FakeConsumer:
    """Hands out queued records poll by poll and records commits."""

    queue: list[Record] = field(default_factory=list)
    commits: list[dict[Partition, int]] = field(default_factory=list)
    paused: bool = False
    on_revoked: Callable[[set[Partition]], None] | None = None
    on_assigned: Callable[[set[Partition]], None] | None = None
    fail_commits: int = 0
    commit_timeouts: list[float | None] = field(default_factory=list)
    rewound: list[dict[Partition, int]] = field(default_factory=list)
    poll_timeouts: list[int] = field(default_factory=list)
    real_time: bool = False  # wait out poll timeouts when there is nothing (threaded tests)

    def subscribe(
        self,
        on_revoked: Callable[[set[Partition]], None],
        on_assigned: Callable[[set[Partition]], None],
    ) -> None:
        self.on_revoked, self.on_assigned = on_revoked, on_assigned

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        self.poll_timeouts.append(timeout_ms)
        if self.paused or not self.queue:
            if self.real_time:
                time.sleep(timeout_ms / 1000)
            return []
        out, self.queue = self.queue[:max_records], self.queue[max_records:]
        return out

    def commit(self, offsets: dict[Partition, int], timeout_s: float | None = None) -> None:
        self.commit_timeouts.append(timeout_s)
        if self.fail_commits:
            from kafka.errors import CommitFailedError

            self.fail_commits -= 1
            raise CommitFailedError("rebalanced")
        self.commits.append(dict(offsets))

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def lag(self, positions: dict[Partition, int]) -> dict[Partition, int]:
        return {tp: 0 for tp in positions}

    def rewind(self, offsets: dict[Partition, int]) -> None:
        self.rewound.append(dict(offsets))

    def committed(self) -> dict[Partition, int]:
        merged: dict[Partition, int] = {}
        for c in self.commits:
            merged.update(c)
        return merged


class ListSink:
    """Keeps what it is given; fails the first ``failures`` writes, and every write for
    which ``fail_if(items)`` holds."""

    def __init__(
        self,
        name: str = "redis",
        failures: int = 0,
        fail_if: Callable[[Sequence[object]], bool] | None = None,
    ) -> None:
        self.name = name
        self.items: list[object] = []
        self.failures = failures
        self.fail_if = fail_if
        self.attempts = 0
        self.closed = False

    def _check(self, items: Sequence[object]) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise SinkError(f"{self.name} is down")
        if self.fail_if is not None and self.fail_if(items):
            raise SinkError(f"{self.name} refuses these")

    def write_batch(self, items: Sequence[object]) -> None:
        self._check(items)
        self.items.extend(items)

    def close(self) -> None:
        self.closed = True


class SendingListSink(ListSink):
    """Like :class:`ListSink`, but sends return at once and the acknowledgement (or the
    failure) comes from ``wait``, as with Kafka's futures."""

    def __init__(self, name: str = "kafka", failures: int = 0) -> None:
        super().__init__(name, failures)
        self.waited = 0

    def send_batch(self, items: Sequence[object]) -> _ListAck:
        return _ListAck(self, list(items))


class _ListAck:
    def __init__(self, sink: SendingListSink, items: list[object]) -> None:
        self._sink = sink
        self._items = items

    def wait(self) -> None:
        self._sink.waited += 1
        self._sink.write_batch(self._items)


class HangingSink(ListSink):
    """A sink whose writes hang until ``release`` (or ``limit_s``, so a test cannot hang)."""

    def __init__(self, name: str = "redis", limit_s: float = 30.0) -> None:
        super().__init__(name)
        self.entered = threading.Event()
        self._released = threading.Event()
        self._limit = limit_s

    def write_batch(self, items: Sequence[object]) -> None:
        self.entered.set()
        if not self._released.wait(self._limit):
            raise SinkError(f"{self.name} timed out")
        super().write_batch(items)

    def release(self) -> None:
        self._released.set()


class ManualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
