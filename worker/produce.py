"""The load generator: post events from a JSON Lines file, or synthetic ones at a rate."""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

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


def file_events(path: Path) -> Iterator[dict[str, object]]:
    """Events from a JSON Lines file; a line without ``post_id`` gets one (its line number)."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                event = json.loads(line)
                event.setdefault("post_id", f"{path.stem}-{n}")
                yield event


def produce(
    settings: Settings,
    events: Iterable[dict[str, object]],
    count: int | None = None,
    rate: float | None = None,
    topic: str | None = None,
) -> int:
    """Send ``count`` events (all, if None) at ``rate`` per second (unthrottled if None)."""
    producer = make_producer(settings, linger_ms=20)
    target = topic or settings.input_topic
    sent = 0
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
            producer.send(target, key=key, value=json.dumps(event).encode())
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent
