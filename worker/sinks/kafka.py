"""Verdicts and dead letters to Kafka topics, acknowledged per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from worker.schema import DeadLetter, Verdict
from worker.sinks import SinkError

HEADER_PREFIX = "modstream."


def _wait_all(producer: KafkaProducer, futures: list[Any], timeout_s: float, what: str) -> None:
    """Flush, then check every send: a batch counts only if each record is acknowledged."""
    try:
        producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)
    except KafkaError as exc:
        raise SinkError(f"{what} write failed: {exc!r}") from exc


class KafkaVerdictSink:
    name = "kafka"

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_s

    def write_batch(self, items: Sequence[Verdict]) -> None:
        if not items:
            return
        futures = [
            self._producer.send(
                self._topic,
                key=v.post_id.encode("utf-8"),
                value=v.model_dump_json().encode("utf-8"),
            )
            for v in items
        ]
        _wait_all(self._producer, futures, self._timeout, f"topic {self._topic}")

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

    def write_batch(self, items: Sequence[DeadLetter]) -> None:
        if not items:
            return
        futures = [
            self._producer.send(
                self._topic,
                key=letter.key,
                value=letter.value if letter.value is not None else b"",
                headers=dead_letter_headers(letter),
            )
            for letter in items
        ]
        _wait_all(self._producer, futures, self._timeout, f"dead-letter topic {self._topic}")

    def close(self) -> None:
        """The producer is shared; its owner closes it."""
