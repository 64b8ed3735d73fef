"""In-memory stand-ins for unit tests: a model, a consumer and sinks. Integration tests use
real Kafka and Redis instead; these only exist so the loop's logic is tested in milliseconds."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from models.base import Scores
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
)


class FakeModel:
    """Scores from keywords: 'fake' in the text -> P(fake)=0.97, 'hate' -> negative."""

    version = "fake-1"
    max_length = 128
    labels: Mapping[str, Sequence[str]] = {
        "sentiment": ["negative", "neutral", "positive"],
        "misinformation": ["real", "fake"],
    }
    policy: Mapping[str, float] = {"block_fake": 0.9, "review_fake": 0.5, "review_negative": 0.8}

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on

    def predict(self, texts: Sequence[str]) -> list[Scores]:
        self.calls.append(len(texts))
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError("model exploded")
        out = []
        for t in texts:
            p_fake = 0.97 if "fake" in t else 0.6 if "maybe" in t else 0.02
            neg = 0.9 if "hate" in t else 0.1
            rest = 1.0 - neg
            out.append(
                {
                    "sentiment": {"negative": neg, "neutral": rest / 2, "positive": rest / 2},
                    "misinformation": {"real": 1.0 - p_fake, "fake": p_fake},
                }
            )
        return out


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
    rewound: list[dict[Partition, int]] = field(default_factory=list)
    poll_timeouts: list[int] = field(default_factory=list)

    def subscribe(
        self,
        on_revoked: Callable[[set[Partition]], None],
        on_assigned: Callable[[set[Partition]], None],
    ) -> None:
        self.on_revoked, self.on_assigned = on_revoked, on_assigned

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        self.poll_timeouts.append(timeout_ms)
        if self.paused:
            return []
        out, self.queue = self.queue[:max_records], self.queue[max_records:]
        return out

    def commit(self, offsets: dict[Partition, int]) -> None:
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
    """Keeps what it is given; fails the first ``failures`` writes."""

    def __init__(self, name: str = "redis", failures: int = 0) -> None:
        self.name = name
        self.items: list[object] = []
        self.failures = failures
        self.attempts = 0
        self.closed = False

    def write_batch(self, items: Sequence[object]) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise SinkError(f"{self.name} is down")
        self.items.extend(items)

    def close(self) -> None:
        self.closed = True


class ManualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
