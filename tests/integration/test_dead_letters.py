"""Dead letters the writer's producer cannot send as they came, on real Kafka and Redis:
an input larger than the producer's max_request_size, a null header value, and a letter
the dead-letter topic refuses for good."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.record import default_records

from tests.fakes import FakeModel
from tests.integration.helpers import create_topics, read_topic, settings_for, wait_for
from worker.app import build_worker
from worker.config import Settings
from worker.kafka_client import committed_total, security_kwargs
from worker.loop import Worker
from worker.sinks.kafka import MAX_REQUEST_BYTES
from worker.stages import SinkRefusedError

pytestmark = pytest.mark.integration


def post(i: int) -> bytes:
    return json.dumps({"post_id": f"p{i}", "text": "hello world"}).encode()


@contextmanager
def running_worker(settings: Settings) -> Iterator[tuple[Worker, dict[str, BaseException]]]:
    """A worker with a fake model on a thread; what its ``run`` raised lands in the dict."""
    raised: dict[str, BaseException] = {}
    with ExitStack() as stack:
        worker = build_worker(settings, FakeModel(), stack)

        def run() -> None:
            try:
                worker.run()
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                raised["error"] = exc

        thread = threading.Thread(target=run, name="worker")
        thread.start()
        try:
            yield worker, raised
        finally:
            worker.request_stop()
            thread.join(timeout=60)
            assert not thread.is_alive(), "worker did not stop within 60 s"


def twenty_more_then_all_committed(settings: Settings, producer: KafkaProducer) -> None:
    """Posts 2..21 after the bad record at offset 1, then a worker until all 22 are
    committed: the bad record did not stop the ones behind it."""
    for i in range(2, 22):
        producer.send(settings.input_topic, post(i))
    producer.flush()
    producer.close()
    with running_worker(settings) as (worker, raised):
        wait_for(lambda: committed_total(settings) == 22, 60, "all 22 records committed")
        assert worker.failed is None and not raised


def test_a_post_larger_than_the_producer_may_send_is_dead_lettered_cut(
    services: Any, run_id: str
) -> None:
    # 3 MB of text compresses to a few KB: the broker takes it, but its dead letter, sent
    # uncompressed, is three times the writer's max_request_size. It used to be retried
    # for ever, holding back every record behind it.
    settings = settings_for(services, run_id, sink_timeout_seconds=5)
    create_topics(settings, partitions=1)
    big = json.dumps({"post_id": "big", "text": "a" * 3_000_000}).encode()
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        compression_type="gzip",
        max_request_size=8_000_000,
    )
    producer.send(settings.input_topic, post(0))
    producer.send(settings.input_topic, big, key=b"big", headers=[("origin", b"test")])
    twenty_more_then_all_committed(settings, producer)

    [dead] = read_topic(settings, settings.dlq_topic, 1)
    headers = dict(dead.headers)
    assert headers["modstream.reason"] == b"too_large"
    assert headers["modstream.source.offset"] == b"1"
    assert headers["modstream.value.truncated"] == b"true"
    assert headers["modstream.value.size"] == str(len(big)).encode()
    assert headers["origin"] == b"test" and dead.key == b"big"
    assert big.startswith(dead.value) and 900_000 < len(dead.value) < MAX_REQUEST_BYTES
    assert len(read_topic(settings, settings.output_topic, 21)) == 21


def test_a_null_header_value_is_dead_lettered_empty_and_named(
    services: Any, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Java and librdkafka producers write null header values; kafka-python reads them as
    # None and its send refuses None: the TypeError stopped the worker on every restart.
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=1)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    producer.send(settings.input_topic, post(0))
    with monkeypatch.context() as patch:  # this producer's encoder writes the marker as null
        append = default_records.DefaultRecordBatchBuilder.append

        def null_marker(self: Any, offset: int, ts: int, key: Any, value: Any, headers: Any) -> Any:
            headers = [(k, None if v == b"<null>" else v) for k, v in headers]
            return append(self, offset, ts, key, value, headers)

        patch.setattr(default_records.DefaultRecordBatchBuilder, "append", null_marker)
        producer.send(
            settings.input_topic, b"{not json", headers=[("trace", b"<null>"), ("o", b"t")]
        )
        producer.flush()
    twenty_more_then_all_committed(settings, producer)

    [dead] = read_topic(settings, settings.dlq_topic, 1)
    assert dead.value == b"{not json"
    assert dead.headers[:2] == [("trace", b""), ("o", b"t")]
    headers = dict(dead.headers)
    assert json.loads(headers["modstream.headers.null"]) == ["trace"]
    assert headers["modstream.reason"] == b"not_json"


def test_a_dead_letter_the_topic_refuses_stops_the_worker_without_committing_it(
    services: Any, run_id: str
) -> None:
    # A dead-letter topic that allows less than the letter (max.message.bytes): no retry can
    # write it and skipping it would lose the record, so the worker stops, loudly, with
    # nothing committed past it, instead of retrying it for ever in silence.
    settings = settings_for(services, run_id, sink_timeout_seconds=5)
    admin = KafkaAdminClient(**security_kwargs(settings))
    try:
        small = NewTopic(settings.dlq_topic, 1, 1, topic_configs={"max.message.bytes": "4096"})
        admin.create_topics([small])
    finally:
        admin.close()
    create_topics(settings, 1, topics=(settings.input_topic, settings.output_topic))
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    producer.send(settings.input_topic, post(0)).get(10)
    producer.send(settings.input_topic, b"{" + b"x" * 20_000).get(10)  # not JSON, 20 KB
    for i in range(2, 8):
        producer.send(settings.input_topic, post(i))
    producer.flush()
    producer.close()

    with running_worker(settings) as (worker, raised):
        wait_for(lambda: worker.failed is not None, 60, "the worker to stop on the refusal")
        assert isinstance(worker.failed, SinkRefusedError)
        assert f"{settings.input_topic}[0]@1" in str(worker.failed)
        assert not worker.ready(60)
    assert isinstance(raised.get("error"), SinkRefusedError)  # run() re-raises it
    assert committed_total(settings) <= 1  # never past the refused record
