"""The data contract: input events, verdicts and dead letters.

Decoding never raises on bad input: it returns a :class:`DeadLetter` instead (errors are
values), so one bad record can neither stop the worker nor vanish.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Action(StrEnum):
    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


class DeadLetterReason(StrEnum):
    """Bounded set of reasons: also the label values of the dead-letter metric."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    INVALID = "invalid_fields"
    MODEL_ERROR = "model_error"


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a record came from; every verdict and dead letter carries it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


class PostEvent(BaseModel):
    """A post to moderate. Unknown fields are ignored; types are not coerced."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    post_id: str = Field(min_length=1, max_length=256)
    text: str
    author_id: str | None = Field(None, max_length=256)
    created_at: datetime | None = None
    lang: str | None = Field(None, max_length=32)

    @field_validator("created_at", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> datetime | None:
        """Accept RFC 3339 strings or epoch milliseconds; always return an aware datetime."""
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError("created_at must be RFC 3339 or epoch milliseconds")
        if isinstance(value, int | float):
            try:
                return datetime.fromtimestamp(value / 1000.0, tz=UTC)
            except (OverflowError, OSError) as exc:  # pydantic reports only ValueError
                raise ValueError("created_at is out of range") from exc
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError("created_at is not RFC 3339") from exc
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        raise ValueError("created_at must be RFC 3339 or epoch milliseconds")


@dataclass(frozen=True, slots=True)
class Post:
    """A decoded event with its source and the event time the latency is measured from."""

    event: PostEvent
    source: SourceRef
    event_time: datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be moderated, with the original bytes and why.

    ``headers`` are the original ones; Kafka allows a null value (Java and librdkafka
    producers write them), which kafka-python reads as None. ``value_size``: the original
    value's length when ``value`` holds only its first bytes (see :meth:`truncated`), else
    None."""

    reason: DeadLetterReason
    detail: str
    source: SourceRef
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = field(default_factory=list)
    value_size: int | None = None

    def truncated(self, max_value_bytes: int) -> DeadLetter:
        """This letter with at most the first ``max_value_bytes`` of its value, recording
        the original size: a value larger than a producer may send (it reached the input
        compressed, or through a topic that allows more) must still leave as a letter."""
        value, limit = self.value or b"", max(0, max_value_bytes)
        if len(value) <= limit:
            return self
        size = len(value) if self.value_size is None else self.value_size
        return dataclasses.replace(self, value=value[:limit], value_size=size)


class SentimentResult(BaseModel):
    label: str
    scores: dict[str, float]


class MisinformationResult(BaseModel):
    label: str
    score: float = Field(description="Probability that the post is fake.")


class Verdict(BaseModel):
    """What the worker decided about one post; the JSON written to Kafka and Redis."""

    model_config = ConfigDict(frozen=True)

    post_id: str
    action: Action
    reasons: list[str] = Field(
        default_factory=list, description="The policy rules, scores and thresholds that decided."
    )
    sentiment: SentimentResult
    misinformation: MisinformationResult
    model_version: str
    event_time: datetime
    processed_at: datetime
    author_pseudonym: str | None = None
    lang: str | None = None
    text: str | None = None
    source_topic: str
    source_partition: int
    source_offset: int
    replay_id: str | None = Field(
        None, description="The replay that wrote this verdict; None for the live worker."
    )

    @functools.cached_property
    def serialized(self) -> str:
        """The verdict as JSON, made once: the Kafka and Redis sinks both write it."""
        return self.model_dump_json()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Verdict:
        """A copy whose JSON is made anew: ``update`` may change what it says."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("serialized", None)
        return copy


def decode(
    key: bytes | None,
    value: bytes | None,
    source: SourceRef,
    *,
    max_event_bytes: int,
    headers: Sequence[tuple[str, bytes | None]] | None = None,
) -> Post | DeadLetter:
    """Turn one Kafka record into a :class:`Post`, or a :class:`DeadLetter` saying why not.

    A well-formed event is parsed and validated in one step, in pydantic's Rust JSON
    parser (3.6 against 12.4 us an event on the development machine, on the thread that
    polls); anything it refuses goes through :func:`decode_stepwise`, which names the
    reason. Both give the same result for every record (a property test checks)."""
    raw = value or b""
    if len(raw) <= max_event_bytes:
        try:
            event = PostEvent.model_validate_json(raw)
        except ValidationError:
            pass  # decode_stepwise says why
        else:
            return _post(event, source)
    return decode_stepwise(key, value, source, max_event_bytes=max_event_bytes, headers=headers)


def decode_stepwise(
    key: bytes | None,
    value: bytes | None,
    source: SourceRef,
    *,
    max_event_bytes: int,
    headers: Sequence[tuple[str, bytes | None]] | None = None,
) -> Post | DeadLetter:
    """:func:`decode` one check at a time (size, UTF-8, JSON, an object, the fields), so a
    record that fails says which."""

    def dead(reason: DeadLetterReason, detail: str) -> DeadLetter:
        return DeadLetter(reason, detail[:500], source, key, value, list(headers or []))

    raw = value or b""
    if len(raw) > max_event_bytes:
        return dead(DeadLetterReason.TOO_LARGE, f"{len(raw)} bytes > limit {max_event_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead(DeadLetterReason.NOT_UTF8, str(exc))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return dead(DeadLetterReason.NOT_JSON, str(exc))
    except RecursionError:
        return dead(DeadLetterReason.NOT_JSON, "nested too deeply")
    if not isinstance(obj, dict):
        return dead(
            DeadLetterReason.NOT_OBJECT, f"expected a JSON object, got {type(obj).__name__}"
        )
    try:
        event = PostEvent.model_validate(obj)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
        )
        return dead(DeadLetterReason.INVALID, detail)
    if broken := _not_unicode(event):
        # A JSON escape can spell a lone surrogate (\ud800), which no UTF-8 text holds: the
        # tokenizer would refuse the post later (a model_error dead letter, its chunk of
        # posts tokenised again one by one) and the sinks could not write it.
        return dead(DeadLetterReason.INVALID, f"{', '.join(broken)}: holds a lone surrogate")
    return _post(event, source)


def _not_unicode(event: PostEvent) -> list[str]:
    """The event's text fields that cannot be written as UTF-8."""
    broken = []
    for name, value in event:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                broken.append(name)
    return broken


def _post(event: PostEvent, source: SourceRef) -> Post:
    if event.created_at is not None:
        return Post(event, source, event.created_at)
    return Post(event, source, _record_time(source.timestamp_ms))


def _record_time(timestamp_ms: int | None) -> datetime:
    """The record's timestamp, or now when it is missing or out of range (producers set it)."""
    if timestamp_ms is not None and timestamp_ms >= 0:
        try:
            return datetime.fromtimestamp(timestamp_ms / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return datetime.now(UTC)
