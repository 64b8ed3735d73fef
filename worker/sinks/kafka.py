"""Verdicts and dead letters to Kafka topics: sends return at once, acks are awaited after.

The producer is shared by both sinks and used from the writer thread only."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from kafka import KafkaProducer
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    UnsupportedForMessageFormatError,
)
from kafka.record.default_records import DefaultRecordBatchBuilder

from worker.schema import DeadLetter, Verdict
from worker.sinks import PermanentSinkError, SinkError

log = logging.getLogger(__name__)

HEADER_PREFIX = "modstream."

# The largest record the writer's producer sends (kafka-python's default, stated because the
# dead-letter sink cuts letters to fit it; the broker's default message.max.bytes is 12 bytes
# more). A post larger than this can still reach the input topic: its producer compressed
# it (the broker checks the compressed batch), or the input topic allows more.
MAX_REQUEST_BYTES = 1024 * 1024

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
WRITER_PRODUCER: Mapping[str, Any] = MappingProxyType(
    {"batch_size": 256 * 1024, "linger_ms": 1000, "max_request_size": MAX_REQUEST_BYTES}
)

# What a dead letter's record stays under, below the producer's max_request_size: the
# margin keeps a cut letter under it should kafka-python count a record's overhead
# differently from the estimate made here.
DEAD_LETTER_MARGIN_BYTES = 1024
# The most a value's length adds to a record beyond an empty value's (a varint, up to 2**28).
VALUE_LENGTH_BYTES = 4

# Refusals of the record itself (kafka-python marks each not retriable): sending the same
# record again fails the same way, so retrying it would stall the writer for ever. Other
# errors that are not retriable (authorisation, a fenced transactional producer) concern
# the topic or the producer, not the record; they stay retried (or abort the transaction),
# so an operator can fix them without losing the record.
RECORD_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,  # over max_request_size, or the topic's max.message.bytes
    RecordListTooLargeError,
    InvalidRecordError,  # refused by the topic's validation
    CorruptRecordError,
    InvalidTimestampError,
    UnsupportedForMessageFormatError,
)
# What ``KafkaProducer.send`` raises for a record it refuses before sending: the errors
# above (its size against max_request_size), TypeError or ValueError (its types: a null
# header value, a key that is not bytes).
SEND_REFUSALS: tuple[type[Exception], ...] = (*RECORD_ERRORS, TypeError, ValueError)


class KafkaAcknowledgement:
    """The futures of one batch's sends; :meth:`wait` checks every one. ``describe(i)``
    names the record of the i-th future (called only when one fails)."""

    def __init__(
        self,
        producer: KafkaProducer,
        futures: list[Any],
        timeout_s: float,
        what: str,
        describe: Callable[[int], str],
    ) -> None:
        self._producer = producer
        self._futures = futures
        self._timeout = timeout_s
        self._what = what
        self._describe = describe

    def wait(self) -> None:
        """Flush, then check every send: a batch counts only if each record is acknowledged.

        kafka-python 3.0.12's flush raises "Future not done" for a batch the broker refused
        as too large, which the producer split and sent again: the records' own futures
        still settle, so they decide (as in :func:`worker.produce.produce`). Taken as a
        failure of the whole batch, a job was sent again on every retry, for ever, and a
        record the topic refuses never showed as refused."""
        try:
            self._producer.flush(timeout=self._timeout)
        except KafkaTimeoutError as exc:
            raise SinkError(f"{self._what} write failed: {exc!r}") from exc
        except KafkaError as exc:
            log.debug("%s: flush raised %r; the records' own results decide", self._what, exc)
        for i, future in enumerate(self._futures):
            try:
                future.get(timeout=self._timeout)
            except RECORD_ERRORS as exc:
                record = self._describe(i)
                raise PermanentSinkError(f"{self._what} refused {record}: {exc!r}") from exc
            except KafkaError as exc:
                raise SinkError(f"{self._what} write failed: {exc!r}") from exc


_T = TypeVar("_T")


def _send_batch(
    producer: KafkaProducer,
    timeout_s: float,
    what: str,
    send: Callable[[_T], Any],
    items: Sequence[_T],
    describe: Callable[[_T], str],
) -> KafkaAcknowledgement:
    """Send ``items`` one record each; the acknowledgement names a failed one by ``describe``."""
    futures = _send_all(send, items, what, describe)
    return KafkaAcknowledgement(producer, futures, timeout_s, what, lambda i: describe(items[i]))


def _send_all(
    send: Callable[[_T], Any], items: Sequence[_T], what: str, describe: Callable[[_T], str]
) -> list[Any]:
    """Start the sends. One that fails at once for want of metadata or room is a SinkError;
    a record ``send`` refuses (:data:`SEND_REFUSALS`) is a PermanentSinkError, never an
    error that escapes the writer."""
    futures: list[Any] = []
    try:
        for item in items:
            futures.append(send(item))
    except SEND_REFUSALS as exc:
        record = describe(items[len(futures)])
        raise PermanentSinkError(f"{what} refused {record}: {exc!r}") from exc
    except KafkaError as exc:
        raise SinkError(f"{what} send failed: {exc!r}") from exc
    return futures


class KafkaVerdictSink:
    name = "kafka"

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_s

    def send_batch(self, items: Sequence[Verdict]) -> KafkaAcknowledgement:
        return _send_batch(
            self._producer, self._timeout, f"topic {self._topic}", self._send, items, _verdict_of
        )

    def _send(self, verdict: Verdict) -> Any:
        return self._producer.send(
            self._topic,
            key=verdict.post_id.encode("utf-8"),
            value=verdict.serialized.encode("utf-8"),
        )

    def write_batch(self, items: Sequence[Verdict]) -> None:
        if items:
            self.send_batch(items).wait()

    def close(self) -> None:
        """The producer is shared; its owner closes it."""


def _verdict_of(verdict: Verdict) -> str:
    return f"the verdict of post {verdict.post_id!r}"


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original headers plus ours, which name the reason and where the record came from,
    and, when the value is cut, its original size. A null original value is written empty
    (kafka-python sends only bytes) and named in ``modstream.headers.null``, since a
    consumer may tell a null header from an empty one."""
    ours = {
        "reason": letter.reason.value,
        "detail": letter.detail,
        "source.topic": letter.source.topic,
        "source.partition": str(letter.source.partition),
        "source.offset": str(letter.source.offset),
    }
    if letter.value_size is not None:
        ours["value.truncated"] = "true"
        ours["value.size"] = str(letter.value_size)
    original = [(k, v) for k, v in letter.headers if not k.startswith(HEADER_PREFIX)]
    if nulls := [k for k, v in original if v is None]:
        ours["headers.null"] = json.dumps(nulls)
    copied = [(k, b"" if v is None else v) for k, v in original]
    return copied + [(HEADER_PREFIX + k, v.encode("utf-8")) for k, v in ours.items()]


def dead_letter_size(letter: DeadLetter) -> int:
    """The letter's record size as kafka-python counts it against max_request_size."""
    return int(
        DefaultRecordBatchBuilder.estimate_size_in_bytes(
            letter.key, letter.value or b"", dead_letter_headers(letter)
        )
    )


def fit_dead_letter(letter: DeadLetter, max_record_bytes: int) -> DeadLetter:
    """``letter`` in a record of at most ``max_record_bytes``: when it is larger, its value
    keeps only its first bytes (its headers say it is cut, and how long it was), so an
    oversized input still leaves as a dead letter instead of stalling the writer. The key
    and headers stay whole: where they alone exceed the limit, the send refuses the letter
    (see :meth:`DeadLetterSink.send_batch`)."""
    if dead_letter_size(letter) <= max_record_bytes:
        return letter
    empty = letter.truncated(0)  # the headers of a cut letter, with the value's length at 0
    room = max_record_bytes - dead_letter_size(empty) - VALUE_LENGTH_BYTES
    return letter.truncated(room)


class DeadLetterSink:
    """Dead letters to a topic. A letter is cut to what the producer can send (see
    :func:`fit_dead_letter`); one the producer or the broker still refuses raises
    :class:`PermanentSinkError`, which stops the writer (see ``WriterStage``)."""

    name = "dead_letter"

    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_s
        # From the producer's own setting, so the cut follows it if it changes.
        self._max_record = int(producer.config["max_request_size"]) - DEAD_LETTER_MARGIN_BYTES

    def send_batch(self, items: Sequence[DeadLetter]) -> KafkaAcknowledgement:
        letters = [fit_dead_letter(letter, self._max_record) for letter in items]
        what = f"dead-letter topic {self._topic}"
        return _send_batch(self._producer, self._timeout, what, self._send, letters, _letter_of)

    def _send(self, letter: DeadLetter) -> Any:
        return self._producer.send(
            self._topic,
            key=letter.key,
            value=letter.value if letter.value is not None else b"",
            headers=dead_letter_headers(letter),
        )

    def write_batch(self, items: Sequence[DeadLetter]) -> None:
        if items:
            self.send_batch(items).wait()

    def close(self) -> None:
        """The producer is shared; its owner closes it."""


def _letter_of(letter: DeadLetter) -> str:
    source = letter.source
    return f"the dead letter of {source.topic}[{source.partition}]@{source.offset}"
