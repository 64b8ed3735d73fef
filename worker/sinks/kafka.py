"""Verdicts and dead letters to Kafka topics: sends return at once, acks are awaited after.

The producer is shared by both sinks and used from the writer thread only."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from worker.schema import DeadLetter, Verdict
from worker.sinks import SinkError

HEADER_PREFIX = "modstream."

# The settings of the producer the writer's sinks share. The writer flushes it after each
# job's sends (KafkaAcknowledgement.wait), so a job's records leave at the flush, in one
# produce request, whatever the linger; the linger only stops batches leaving while the job
# is still being appended. With kafka-python's 16 KiB batches and a 5 ms linger, a merged
# job (up to 256 verdicts over a topic's partitions) filled several batches a partition,
# and once a partition held two, every send woke the producer's network thread: a write on
# a socket pair that hands the interpreter lock away, about one send in two (10,523 for
# 20,000 verdicts, measured). A batch holds a partition's share of a job; one that fills
# still goes at once (kafka-python sends a full batch without waiting for the linger). The
# request no longer overlaps the Redis write; that overlap bought nothing measurable once
# the writer waits for the interpreter lock rather than for I/O (Redis written on a
# thread of its own during the flush: the same rate, paired runs).
WRITER_PRODUCER: Mapping[str, Any] = MappingProxyType({"batch_size": 256 * 1024, "linger_ms": 1000})


class KafkaAcknowledgement:
    """The futures of one batch's sends; :meth:`wait` checks every one."""

    def __init__(
        self, producer: KafkaProducer, futures: list[Any], timeout_s: float, what: str
    ) -> None:
        self._producer = producer
        self._futures = futures
        self._timeout = timeout_s
        self._what = what

    def wait(self) -> None:
        """Flush, then check every send: a batch counts only if each record is acknowledged."""
        try:
            self._producer.flush(timeout=self._timeout)
            for future in self._futures:
                future.get(timeout=self._timeout)
        except KafkaError as exc:
            raise SinkError(f"{self._what} write failed: {exc!r}") from exc


def _send_all(send: Callable[[], list[Any]], what: str) -> list[Any]:
    """Start the sends; a send that fails at once (no metadata, buffer full) is a SinkError."""
    try:
        return send()
    except KafkaError as exc:
        raise SinkError(f"{what} send failed: {exc!r}") from exc


class KafkaVerdictSink:
    name = "kafka"

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_s

    def send_batch(self, items: Sequence[Verdict]) -> KafkaAcknowledgement:
        what = f"topic {self._topic}"
        futures = _send_all(
            lambda: [
                self._producer.send(
                    self._topic,
                    key=v.post_id.encode("utf-8"),
                    value=v.serialized.encode("utf-8"),
                )
                for v in items
            ],
            what,
        )
        return KafkaAcknowledgement(self._producer, futures, self._timeout, what)

    def write_batch(self, items: Sequence[Verdict]) -> None:
        if items:
            self.send_batch(items).wait()

    def close(self) -> None:
        """The producer is shared; its owner closes it."""


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original headers plus ours, which name the reason and where the record came from."""
    ours = {
        "reason": letter.reason.value,
        "detail": letter.detail,
        "source.topic": letter.source.topic,
        "source.partition": str(letter.source.partition),
        "source.offset": str(letter.source.offset),
    }
    original = [(k, v) for k, v in letter.headers if not k.startswith(HEADER_PREFIX)]
    return original + [(HEADER_PREFIX + k, v.encode("utf-8")) for k, v in ours.items()]


class DeadLetterSink:
    name = "dead_letter"

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_s

    def send_batch(self, items: Sequence[DeadLetter]) -> KafkaAcknowledgement:
        what = f"dead-letter topic {self._topic}"
        futures = _send_all(
            lambda: [
                self._producer.send(
                    self._topic,
                    key=letter.key,
                    value=letter.value if letter.value is not None else b"",
                    headers=dead_letter_headers(letter),
                )
                for letter in items
            ],
            what,
        )
        return KafkaAcknowledgement(self._producer, futures, self._timeout, what)

    def write_batch(self, items: Sequence[DeadLetter]) -> None:
        if items:
            self.send_batch(items).wait()

    def close(self) -> None:
        """The producer is shared; its owner closes it."""
