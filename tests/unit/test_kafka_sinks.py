"""The Kafka sinks against a producer that checks records as kafka-python's ``send`` does
(header types, size against ``max_request_size``) and a broker that may refuse them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kafka.errors
import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from worker.schema import DeadLetter, DeadLetterReason, SourceRef, Verdict
from worker.sinks import PermanentSinkError, SinkError
from worker.sinks.kafka import (
    MAX_REQUEST_BYTES,
    RECORD_ERRORS,
    WRITER_PRODUCER,
    DeadLetterSink,
    KafkaVerdictSink,
    dead_letter_size,
    fit_dead_letter,
)


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class Future:
    def __init__(self, error: Exception | None) -> None:
        self._error = error

    def get(self, timeout: float | None = None) -> None:
        if self._error is not None:
            raise self._error


class CheckingProducer:
    """Refuses in ``send`` what kafka-python 3.0 refuses there; ``broker(record)`` returns
    the error the broker answers a record with (None: acknowledged)."""

    def __init__(
        self,
        max_request_size: int = MAX_REQUEST_BYTES,
        broker: Callable[[Sent], Exception | None] = lambda _: None,
    ) -> None:
        self.config = {"max_request_size": max_request_size}
        self.broker = broker
        self.sent: list[Sent] = []

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, Any]] | None = None,
    ) -> Future:
        headers = headers or []
        if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers):
            raise TypeError("All headers items must be (str, bytes) tuples")
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self.config["max_request_size"]:
            raise kafka.errors.MessageSizeTooLargeError(f"The message is {size} bytes")
        record = Sent(topic, key, value, headers)
        error = self.broker(record)
        if error is None:
            self.sent.append(record)
        return Future(error)

    def flush(self, timeout: float | None = None) -> None:
        pass


SRC = SourceRef("posts", 0, 7)


def letter(
    value: bytes, key: bytes | None = b"k", headers: list[tuple[str, bytes | None]] | None = None
) -> DeadLetter:
    return DeadLetter(DeadLetterReason.TOO_LARGE, "big", SRC, key, value, headers or [])


def dlq(producer: CheckingProducer) -> DeadLetterSink:
    return DeadLetterSink(producer, "posts.dlq", 1.0)  # type: ignore[arg-type]


def test_an_oversized_letter_leaves_with_a_prefix_and_its_original_size() -> None:
    # A 3 MB post reaches the input compressed; its letter must still fit one request.
    producer = CheckingProducer()
    big = b'{"text": "' + b"a" * 3_000_000 + b'"}'
    dlq(producer).write_batch([letter(big, headers=[("origin", b"app")])])
    [sent] = producer.sent
    assert sent.value is not None and big.startswith(sent.value)
    assert 900_000 < len(sent.value) < MAX_REQUEST_BYTES
    headers = dict(sent.headers)
    assert headers["modstream.value.truncated"] == b"true"
    assert headers["modstream.value.size"] == str(len(big)).encode()
    assert headers["origin"] == b"app" and headers["modstream.reason"] == b"too_large"
    assert sent.key == b"k"


def test_a_letter_that_fits_is_written_whole_without_truncation_headers() -> None:
    producer = CheckingProducer()
    value = b"x" * 500_000
    dlq(producer).write_batch([letter(value)])
    [sent] = producer.sent
    assert sent.value == value
    assert not any(k.startswith("modstream.value.") for k, _ in sent.headers)


@pytest.mark.parametrize("limit", [4096, 70_000, MAX_REQUEST_BYTES])
@pytest.mark.parametrize("header_bytes", [0, 1000])
def test_a_cut_letter_fills_its_limit_without_passing_it(limit: int, header_bytes: int) -> None:
    headers: list[tuple[str, bytes | None]] = [("h", b"v" * header_bytes)]
    for size in (limit - 200, limit - 40, limit, limit + 1, 3 * limit):
        original = letter(b"z" * size, headers=headers)
        fitted = fit_dead_letter(original, limit)
        assert dead_letter_size(fitted) <= limit
        if fitted is not original:  # cut: no more than a varint's bytes are left unused
            assert dead_letter_size(fitted) > limit - 8
            assert fitted.value_size == size


def test_the_sink_cuts_to_the_producers_own_setting() -> None:
    producer = CheckingProducer(max_request_size=10_000)
    dlq(producer).write_batch([letter(b"y" * 50_000)])
    [sent] = producer.sent
    assert sent.value is not None and 7_000 < len(sent.value) < 10_000


def test_the_writer_producer_states_the_limit_letters_are_cut_to() -> None:
    assert WRITER_PRODUCER["max_request_size"] == MAX_REQUEST_BYTES


def test_a_null_header_value_is_written_empty_and_named() -> None:
    # Java and librdkafka producers write null header values; kafka-python's send refuses
    # None (a TypeError, which escaped the writer and stopped the worker on every restart).
    producer = CheckingProducer()
    headers: list[tuple[str, bytes | None]] = [("trace", None), ("origin", b"app")]
    dlq(producer).write_batch([letter(b"{", headers=headers)])
    [sent] = producer.sent
    assert sent.headers[:2] == [("trace", b""), ("origin", b"app")]
    assert json.loads(dict(sent.headers)["modstream.headers.null"]) == ["trace"]


def test_a_letter_without_null_headers_has_no_null_header_marker() -> None:
    producer = CheckingProducer()
    dlq(producer).write_batch([letter(b"{", headers=[("origin", b"")])])
    assert "modstream.headers.null" not in dict(producer.sent[0].headers)


def test_a_record_that_send_refuses_is_a_permanent_failure_naming_it() -> None:
    # A key or headers alone over the limit: nothing left to cut. And a TypeError or
    # ValueError from send is a refusal of that record, not an error to escape the writer.
    producer = CheckingProducer(max_request_size=2048)
    with pytest.raises(PermanentSinkError, match=r"posts\[0\]@7.*MessageSizeTooLargeError"):
        dlq(producer).write_batch([letter(b"v", key=b"k" * 4096)])

    class Broken(CheckingProducer):
        def send(self, *args: Any, **kwargs: Any) -> Future:
            raise ValueError("Partitioner did not assign a partition")

    with pytest.raises(PermanentSinkError, match=r"posts\[0\]@7.*ValueError"):
        dlq(Broken()).write_batch([letter(b"v")])


def test_a_broker_refusal_of_a_record_is_permanent_and_names_it() -> None:
    # The dead-letter topic allows less than the producer sends (max.message.bytes).
    def broker(record: Sent) -> Exception | None:
        big = len(record.value or b"") > 1000
        return kafka.errors.MessageSizeTooLargeError() if big else None

    producer = CheckingProducer(broker=broker)
    ok = DeadLetter(DeadLetterReason.NOT_JSON, "x", SourceRef("posts", 0, 6), None, b"{", [])
    with pytest.raises(PermanentSinkError, match=r"refused the dead letter of posts\[0\]@7"):
        dlq(producer).write_batch([ok, letter(b"v" * 5000)])


def test_a_broker_outage_stays_a_retriable_failure() -> None:
    producer = CheckingProducer(broker=lambda _: kafka.errors.KafkaConnectionError("down"))
    with pytest.raises(SinkError) as failure:
        dlq(producer).write_batch([letter(b"v")])
    assert not isinstance(failure.value, PermanentSinkError)


def test_a_verdict_the_broker_refuses_is_a_permanent_failure_naming_its_post() -> None:
    producer = CheckingProducer(broker=lambda _: kafka.errors.InvalidRecordError("schema"))
    sink = KafkaVerdictSink(producer, "verdicts", 1.0)  # type: ignore[arg-type]
    with pytest.raises(PermanentSinkError, match="post 'p1'"):
        sink.write_batch([verdict("p1")])


def test_record_errors_are_ones_kafka_marks_not_retriable() -> None:
    assert RECORD_ERRORS and not any(error.retriable for error in RECORD_ERRORS)


def verdict(post_id: str) -> Verdict:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Verdict.model_validate(
        {
            "post_id": post_id,
            "action": "allow",
            "sentiment": {"label": "neutral", "scores": {"neutral": 1.0}},
            "misinformation": {"label": "real", "score": 0.0},
            "model_version": "test",
            "event_time": now,
            "processed_at": now,
            "source_topic": "posts",
            "source_partition": 0,
            "source_offset": 1,
        }
    )


class SplittingProducer(CheckingProducer):
    """Flushes as kafka-python 3.0.12 does after the broker refused a batch as too large and
    the producer split it and sent the halves again: flush raises, the records' own futures
    settle (``broker`` says how)."""

    def flush(self, timeout: float | None = None) -> None:
        raise kafka.errors.UnknownError("Future not done")


def test_a_split_batch_whose_records_all_land_is_acknowledged() -> None:
    """The flush's error used to fail the whole job: sent again on every retry, for ever."""
    producer = SplittingProducer()
    dlq(producer).write_batch([letter(b"a"), letter(b"b")])
    assert [r.value for r in producer.sent] == [b"a", b"b"]


def test_a_split_batch_with_a_record_the_topic_refuses_is_a_permanent_failure() -> None:
    def broker(record: Sent) -> Exception | None:
        return kafka.errors.MessageSizeTooLargeError() if record.value == b"big" else None

    with pytest.raises(PermanentSinkError, match=r"refused the dead letter of posts\[0\]@7"):
        dlq(SplittingProducer(broker=broker)).write_batch([letter(b"a"), letter(b"big")])


def test_a_flush_that_times_out_stays_a_retriable_failure() -> None:
    class Slow(CheckingProducer):
        def flush(self, timeout: float | None = None) -> None:
            raise kafka.errors.KafkaTimeoutError("flush")

    with pytest.raises(SinkError) as failure:
        dlq(Slow()).write_batch([letter(b"a")])
    assert not isinstance(failure.value, PermanentSinkError)
