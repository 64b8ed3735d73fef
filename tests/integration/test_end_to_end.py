"""The worker against real Kafka and Redis."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import redis

from models.base import Classifier
from tests.fakes import FakeModel
from tests.integration.helpers import (
    create_topics,
    events,
    read_topic,
    settings_for,
    to_bytes,
    verdict_keys,
    wait_for,
)
from worker.app import build_worker
from worker.config import Settings
from worker.kafka_client import committed_total, make_producer
from worker.loop import Worker

pytestmark = pytest.mark.integration


@contextmanager
def running_worker(settings: Settings, model: Classifier) -> Iterator[Worker]:
    with ExitStack() as stack:
        worker = build_worker(settings, model, stack)
        thread = threading.Thread(target=worker.run, name="worker")
        thread.start()
        try:
            yield worker
        finally:
            worker.request_stop()
            thread.join(timeout=60)
            assert not thread.is_alive(), "worker did not stop within 60 s"


@pytest.fixture(scope="module")
def shipped_model() -> Classifier:
    from models import DEFAULT_ARTIFACT_DIR
    from models.runtime import load_predictor

    return load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu")


def test_thousand_events_one_verdict_each_and_bad_records_dead_lettered(
    services,
    run_id: str,
    shipped_model: Classifier,  # type: ignore[no-untyped-def]
) -> None:
    settings = settings_for(services, run_id, batch_max_size=64)
    create_topics(settings)
    good = events(run_id, 1000)
    bad = [
        b"{not json",
        b'{"post_id": "x"}',
        b"\xff\xfe",
        b'{"post_id": 1, "text": "t"}',
        b'["list"]',
    ]
    producer = make_producer(settings)
    for i, event in enumerate(good):
        producer.send(settings.input_topic, key=event["post_id"].encode(), value=to_bytes(event))
        if i % 200 == 0:
            producer.send(
                settings.input_topic, key=b"bad", value=bad[i // 200], headers=[("origin", b"test")]
            )
    producer.flush()
    producer.close()

    client = redis.Redis.from_url(services.redis_url)
    with running_worker(settings, shipped_model):
        wait_for(lambda: len(verdict_keys(client, run_id)) >= 1000, 240, "1000 verdicts in Redis")
        wait_for(lambda: committed_total(settings) == 1005, 60, "offsets of all 1005 records")

    keys = verdict_keys(client, run_id)
    assert len(keys) == 1000
    sample = client.hgetall(keys[0])
    for field in (
        b"action",
        b"sentiment",
        b"misinformation",
        b"model_version",
        b"processed_at",
        b"json",
    ):
        assert field in sample
    assert client.ttl(keys[0]) > 0
    doc = json.loads(sample[b"json"])
    assert doc["action"] in {"allow", "review", "block"}
    # Every verdict says why: the rules, scores and thresholds that decided its action.
    assert doc["reasons"] and sample[b"reasons"].decode() == "; ".join(doc["reasons"])
    rule = {"block": "fake_score=", "review": "_score=", "allow": "<review_fake="}[doc["action"]]
    assert any(rule in reason for reason in doc["reasons"]), doc["reasons"]
    assert (
        doc["text"] is None
        and doc["author_pseudonym"]
        and not doc["author_pseudonym"].startswith("u")
    )

    out = read_topic(settings, settings.output_topic, 1000)
    assert {r.key.decode() for r in out} == {e["post_id"] for e in good}
    assert all(json.loads(r.value)["post_id"] == r.key.decode() for r in out)
    assert all(json.loads(r.value)["reasons"] for r in out)

    dlq = read_topic(settings, settings.dlq_topic, len(bad))
    assert sorted(r.value for r in dlq) == sorted(bad)
    for r in dlq:
        headers = dict(r.headers)
        assert headers["modstream.reason"] in {
            b"not_json",
            b"invalid_fields",
            b"not_utf8",
            b"not_object",
        }
        assert headers["modstream.source.topic"] == settings.input_topic.encode()
        assert int(headers["modstream.source.offset"]) >= 0
        assert headers["origin"] == b"test"


def test_reprocessing_overwrites_instead_of_duplicating(services, run_id: str) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=1)
    producer = make_producer(settings)
    event = events(run_id, 1)[0]
    for text in ("first version", "this is fake news now"):
        producer.send(settings.input_topic, value=to_bytes({**event, "text": text}))
    producer.flush()
    producer.close()
    client = redis.Redis.from_url(services.redis_url)
    with running_worker(settings, FakeModel()):
        wait_for(lambda: committed_total(settings) == 2, 60, "both records committed")
    keys = verdict_keys(client, run_id)
    assert len(keys) == 1
    assert client.hget(keys[0], "action") == b"block"  # the later record's verdict
