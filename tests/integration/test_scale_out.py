"""Two workers in one consumer group share the partitions; a rebalance mid-stream loses
nothing."""

from __future__ import annotations

import time

import pytest
import redis

from tests.fakes import FakeModel
from tests.integration.helpers import (
    create_topics,
    events,
    settings_for,
    to_bytes,
    verdict_keys,
    wait_for,
)
from tests.integration.test_end_to_end import running_worker
from worker.kafka_client import committed_total, make_producer

pytestmark = pytest.mark.integration


class SlowModel(FakeModel):
    """Slow enough that the stream is still flowing when the second worker joins."""

    def predict_encoded(self, items):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return super().predict_encoded(items)


def test_a_second_worker_takes_over_partitions_without_losing_posts(services, run_id: str) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(services, run_id, batch_max_size=8)
    create_topics(settings, partitions=4)
    producer = make_producer(settings)
    posts = events(run_id, 2000)
    for event in posts:
        producer.send(settings.input_topic, key=event["post_id"].encode(), value=to_bytes(event))
    producer.flush()
    producer.close()
    client = redis.Redis.from_url(services.redis_url)

    with running_worker(settings, SlowModel()) as first:
        wait_for(lambda: len(verdict_keys(client, run_id)) >= 50, 60, "the first verdicts")
        with running_worker(settings, SlowModel()) as second:
            wait_for(
                lambda: (
                    bool(first.assigned)
                    and bool(second.assigned)
                    and len(first.assigned) + len(second.assigned) == 4
                ),
                60,
                "the partitions to be shared",
            )
            assert first.assigned.isdisjoint(second.assigned)
            try:
                wait_for(lambda: committed_total(settings) == 2000, 180, "all offsets committed")
            except TimeoutError as exc:  # say where it stuck: each worker's view
                views = {
                    name: (sorted(w.assigned), w.committed(), w.stopping, repr(w.failed))
                    for name, w in (("first", first), ("second", second))
                }
                raise TimeoutError(
                    f"{exc}: {committed_total(settings)} committed; workers {views}"
                ) from None
    keys = {k.decode().rsplit(":", 1)[1] for k in verdict_keys(client, run_id)}
    assert keys == {e["post_id"] for e in posts}
