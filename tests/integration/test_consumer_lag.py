"""Lag as the broker sees it: log-end offset minus the group's committed offset."""

from __future__ import annotations

import time

import pytest

from tests.integration.helpers import create_topics, settings_for, wait_for
from worker.checkpoint import Partition
from worker.consumer import InputConsumer
from worker.kafka_client import make_consumer, make_producer

pytestmark = pytest.mark.integration


def test_lag_counts_from_the_committed_offset_and_stays_right_while_paused(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=1)
    tp = Partition(settings.input_topic, 0)
    producer = make_producer(settings)

    def send(n: int) -> None:
        for _ in range(n):
            producer.send(settings.input_topic, value=b"{}", partition=0)
        producer.flush()

    send(10)
    consumer = InputConsumer(
        make_consumer(settings),
        settings.input_topic,
        commit_timeout_s=settings.sink_timeout_seconds,
    )
    try:
        consumer.subscribe(lambda _: None, lambda _: None)
        polled: list[object] = []
        wait_for(
            lambda: bool(polled.extend(consumer.poll(200, 500)) or len(polled) >= 10),
            60,
            "the first records",
        )
        assert consumer.lag({}) == {tp: 10}  # nothing committed yet: all ten are left
        consumer.commit({tp: 4})
        assert consumer.lag({}) == {tp: 6}
        consumer.pause()
        send(5)
        time.sleep(0.2)
        consumer.poll(100, 500)  # paused: fetches nothing, so no new high watermark
        assert consumer.lag({}) == {tp: 11}
    finally:
        consumer.close()
        producer.close()
