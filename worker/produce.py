"""The load generator: post events from a JSON Lines file, or synthetic ones at a rate."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from kafka.errors import KafkaError

from worker.config import Settings
from worker.kafka_client import make_producer

_SUBJECTS = [
    "The vaccine",
    "My phone",
    "The new policy",
    "This movie",
    "Our team",
    "The mayor",
    "5G towers",
    "The weather",
    "The hospital",
    "Drinking hot water",
]
_CLAIMS = [
    "is absolutely wonderful, best day ever!",
    "was fine I guess, nothing special.",
    "is a disaster and I am so angry about it.",
    "cures COVID-19 in 24 hours, doctors don't want you to know!",
    "reported 1,204 new cases today according to the health ministry.",
    "spreads the virus, share before they delete this!",
    "will be discussed at the council meeting on Tuesday.",
    "made me laugh so hard @friend http://example.com/x",
]


def synthetic_events(seed: int = 7) -> Iterator[dict[str, object]]:
    """An endless stream of plausible posts (mixed sentiment, some misinformation)."""
    rng = random.Random(seed)
    for n in itertools.count():
        yield {
            "post_id": f"syn-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}-{n}",
            "text": f"{rng.choice(_SUBJECTS)} {rng.choice(_CLAIMS)}",
            "author_id": f"user{rng.randrange(10_000)}",
            "created_at": datetime.now(UTC).isoformat(),
            "lang": "en",
        }


class ProduceError(RuntimeError):
    """Events could not be read, or the broker did not accept them all."""


def file_events(path: Path) -> Iterator[dict[str, object]]:
    """Events from a JSON Lines file; a line without ``post_id`` gets one (its line number).
    A line that is not a JSON object stops the run (ProduceError naming the line): the
    worker would only dead-letter it."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ProduceError(f"{path} line {n}: not JSON ({exc.msg})") from None
                if not isinstance(event, dict):
                    raise ProduceError(f"{path} line {n}: not a JSON object")
                event.setdefault("post_id", f"{path.stem}-{n}")
                yield event


class _Outcomes:
    """How the broker answered the sends so far (the futures settle on the producer's
    network thread); counted, not kept, so a long run holds no future per event."""

    def __init__(self) -> None:
        self._settled = threading.Condition()
        self.acked = 0
        self.failed = 0
        self.first_error: BaseException | None = None

    def ack(self, _metadata: object) -> None:
        with self._settled:
            self.acked += 1
            self._settled.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._settled:
            self.failed += 1
            self.first_error = self.first_error or exc
            self._settled.notify_all()

    def wait(self, sent: int, timeout_s: float) -> bool:
        """Whether all ``sent`` settled within ``timeout_s``."""
        with self._settled:
            return self._settled.wait_for(lambda: self.acked + self.failed >= sent, timeout_s)


def produce(
    settings: Settings,
    events: Iterable[dict[str, object]],
    count: int | None = None,
    rate: float | None = None,
    topic: str | None = None,
) -> int:
    """Send ``count`` events (all, if None) at ``rate`` per second (unthrottled if None).
    Returns how many the broker acknowledged: all of them, or it raises ProduceError."""
    producer = make_producer(settings, linger_ms=20)
    target = topic or settings.input_topic
    sent = 0
    outcomes = _Outcomes()
    try:
        # The first send waits for the cluster's metadata (0.2 s on a local broker): fetched
        # before the clock starts, or a paced stream would open with a burst of the posts
        # due meanwhile (at 333 posts/s, some 70 at once).
        producer.partitions_for(target)
        started = time.monotonic()
        for event in itertools.islice(events, count):
            if rate:
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            key = str(event.get("post_id", "")).encode() or None
            future = producer.send(target, key=key, value=json.dumps(event).encode())
            future.add_callback(outcomes.ack).add_errback(outcomes.fail)
            sent += 1
        try:
            producer.flush()
        except KafkaError:
            # kafka-python 3.0.12's flush raises "Future not done" for a batch the broker
            # refused as too large and the producer split and sent again; the records' own
            # futures still settle, and are what is counted.
            pass
        settled = outcomes.wait(sent, settings.sink_timeout_seconds)
    finally:
        producer.close()
    if outcomes.failed or not settled:
        raise ProduceError(
            f"the broker did not accept {sent - outcomes.acked} of {sent} events for "
            f"{target}: {outcomes.first_error or 'no answer in time'!r}"
        )
    return sent
