"""The load generator (``modstream produce``) against a real broker."""

from __future__ import annotations

import json

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from tests.integration.helpers import create_topics, events, read_topic, settings_for
from worker.kafka_client import security_kwargs
from worker.produce import ProduceError, produce

pytestmark = pytest.mark.integration

RATE = 20.0  # posts a second: 50 ms apart


def test_a_paced_stream_starts_at_its_rate_without_an_opening_burst(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
) -> None:
    """Each post is sent no earlier than its place in the schedule (post i at i / rate after
    the first). The first send used to wait for the cluster's metadata (~0.2 s) after the
    clock had started, so the posts due meanwhile went out at once: an open-loop benchmark
    measured that burst as latency."""
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=1, topics=[settings.input_topic])
    assert produce(settings, events(run_id, 12), rate=RATE) == 12
    records = read_topic(settings, settings.input_topic, 12)
    stamps = [r.timestamp for r in sorted(records, key=lambda r: r.offset)]
    assert len(stamps) == 12
    # Sleeping never wakes early, so the only slack needed is the millisecond rounding of
    # the timestamps and a late first send (up to 40 ms here).
    early = [
        (i, stamps[i] - stamps[0])
        for i in range(1, len(stamps))
        if stamps[i] - stamps[0] < i * 1000 / RATE - 40
    ]
    assert not early, f"sent ahead of the schedule (post, ms after the first): {early}"


def test_events_the_broker_refuses_fail_the_run_instead_of_counting_as_sent(
    services,  # type: ignore[no-untyped-def]
    run_id: str,
) -> None:
    """kafka-python's flush does not raise for a record the broker refused; the count of
    events sent used to include it and `modstream produce` exited 0 with nothing written."""
    settings = settings_for(services, run_id)
    admin = KafkaAdminClient(**security_kwargs(settings))
    try:  # a topic that takes records of at most 1,000 bytes
        admin.create_topics(
            [NewTopic(settings.input_topic, 1, 1, topic_configs={"max.message.bytes": "1000"})]
        )
    finally:
        admin.close()
    small, large = events(run_id, 2)
    large["text"] = "x" * 5000
    with pytest.raises(ProduceError, match="did not accept 1 of 2 events"):
        produce(settings, [small, large])
    assert [r.value for r in read_topic(settings, settings.input_topic, 1, timeout=5)] == [
        json.dumps(small).encode()
    ]
