"""Property-based fuzzing of ``worker.schema.decode``: whatever a producer sends, the worker
gets a Post or a DeadLetter that keeps the original record, never an exception.

Deterministic (``derandomize``, no example database) and bounded (``max_examples``) so it
runs in a few seconds and gives the same result in CI as on a laptop.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from worker.schema import (
    DeadLetter,
    DeadLetterReason,
    Post,
    SourceRef,
    decode,
    decode_stepwise,
)

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
LIMIT = 64 * 1024
INT64 = st.integers(-(2**63), 2**63 - 1)

sources = st.builds(
    SourceRef,
    topic=st.just("posts"),
    partition=st.integers(0, 64),
    offset=st.integers(0, 2**62),
    timestamp_ms=st.none() | INT64,  # Kafka timestamps are int64; producers choose CreateTime
)
keys = st.none() | st.binary(max_size=64)
header_lists = st.lists(st.tuples(st.text(max_size=16), st.binary(max_size=32)), max_size=3)
# Every code point, lone surrogates included: json.dumps writes them as \\udXXX escapes.
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=300)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: far beyond float and time_t ranges
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
timestamps = st.one_of(
    INT64,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{1,12}(Z|[+-][0-9]{2}:[0-9]{2})?\Z"),
    json_values,
)
# Each field missing, well typed, or of any JSON type and size.
event_dicts = st.fixed_dictionaries(
    {},
    optional={
        "post_id": st.text(max_size=300) | json_values,
        "text": any_text | st.text(max_size=5000) | json_values,
        "created_at": timestamps,
        "author_id": st.text(max_size=300) | json_values,
        "lang": st.text(max_size=40) | json_values,
        "extra": json_values,
    },
)


def check(
    result: Post | DeadLetter,
    key: bytes | None,
    value: bytes | None,
    source: SourceRef,
    headers: list[tuple[str, bytes]],
) -> None:
    """The contract every outcome must meet."""
    if isinstance(result, DeadLetter):
        assert result.reason in set(DeadLetterReason)
        assert result.detail and len(result.detail) <= 500
        assert (result.key, result.value, result.headers) == (key, value, headers)
        assert result.source == source
        return
    assert isinstance(result, Post)
    assert result.source == source
    assert isinstance(result.event.post_id, str) and 1 <= len(result.event.post_id) <= 256
    assert isinstance(result.event.text, str)
    assert result.event_time.tzinfo is not None
    # Whatever is accepted can be written out as UTF-8 by the sinks.
    result.event.model_dump_json().encode("utf-8")


def same_outcome(fast: Post | DeadLetter, stepwise: Post | DeadLetter) -> None:
    """decode's one-step parse accepts exactly what the stepwise checks accept, as the same
    event (an event time taken from the clock may differ by the time between the calls)."""
    if isinstance(stepwise, DeadLetter):
        assert fast == stepwise
        return
    assert isinstance(fast, Post), fast
    assert (fast.event, fast.source) == (stepwise.event, stepwise.source)
    assert abs((fast.event_time - stepwise.event_time).total_seconds()) < 60


def run(key: bytes | None, value: bytes | None, source: SourceRef, headers: Any) -> None:
    result = decode(key, value, source, max_event_bytes=LIMIT, headers=headers)
    check(result, key, value, source, headers)
    stepwise = decode_stepwise(key, value, source, max_event_bytes=LIMIT, headers=headers)
    same_outcome(result, stepwise)


@FUZZ
@given(keys, st.none() | st.binary(max_size=2048), sources, header_lists)
@example(b"k", b"[" * 5_000, SourceRef("posts", 0, 0), [])  # nesting deeper than the parser
@example(None, None, SourceRef("posts", 0, 0), [])  # a tombstone
@example(None, b"\xff\xfe{}", SourceRef("posts", 0, 0), [])
@example(None, b'\xef\xbb\xbf{"post_id": "p", "text": "t"}', SourceRef("posts", 0, 0), [])  # BOM
@example(None, b'{"post_id": "p", "text": "a\nb"}', SourceRef("posts", 0, 0), [])  # raw newline
@example(None, b'{"post_id": "p", "text": "\\ud800"}', SourceRef("posts", 0, 0), [])
@example(None, b'{"post_id": "p", "text": "t", "post_id": "q"}', SourceRef("posts", 0, 0), [])
@example(None, b'{"post_id": "p", "text": "t", "x": NaN}', SourceRef("posts", 0, 0), [])
@example(None, b'{"post_id": "p", "text": "t", "x": 1}  trailing', SourceRef("posts", 0, 0), [])
@example(None, b' {"post_id": "p", "text": "t", "x": [1,]} ', SourceRef("posts", 0, 0), [])
@example(None, b'{"post_id": "p", "text": "t", "created_at": 1e400}', SourceRef("posts", 0, 0), [])
def test_any_bytes_give_a_post_or_a_dead_letter(
    key: bytes | None, value: bytes | None, source: SourceRef, headers: list[tuple[str, bytes]]
) -> None:
    run(key, value, source, headers)


@FUZZ
@given(json_values, sources)
def test_any_json_value_gives_a_post_or_a_dead_letter(obj: Any, source: SourceRef) -> None:
    run(b"k", json.dumps(obj).encode(), source, [])


@FUZZ
@given(event_dicts, sources)
@example({"post_id": "p", "text": "t", "created_at": 1e400}, SourceRef("posts", 0, 0))
@example({"post_id": "p", "text": "t", "created_at": float("inf")}, SourceRef("posts", 0, 0))
@example({"post_id": "p", "text": "t", "created_at": 10**30}, SourceRef("posts", 0, 0))
@example({"post_id": "p", "text": "t", "created_at": 10**400}, SourceRef("posts", 0, 0))
@example({"post_id": "p", "text": "t", "created_at": -(10**20)}, SourceRef("posts", 0, 0))
@example({"post_id": "p", "text": "t"}, SourceRef("posts", 0, 0, 2**63 - 1))
@example({"post_id": "p", "text": "t"}, SourceRef("posts", 0, 0, -(2**63)))
@example({"post_id": "\ud800", "text": "t"}, SourceRef("posts", 0, 0))
def test_any_event_fields_give_a_post_or_a_dead_letter(
    event: dict[str, Any], source: SourceRef
) -> None:
    run(b"k", json.dumps(event).encode(), source, [("trace", b"1")])


valid_events = st.fixed_dictionaries(
    {
        "post_id": st.text(min_size=1, max_size=256),
        "text": st.text(max_size=2000),
    },
    optional={
        "author_id": st.none() | st.text(max_size=256),
        "lang": st.none() | st.text(max_size=32),
        "created_at": st.datetimes(
            min_value=datetime(1971, 1, 1), max_value=datetime(2999, 1, 1), timezones=st.just(UTC)
        ),
    },
)


@FUZZ
@given(valid_events, sources)
def test_a_valid_event_round_trips(event: dict[str, Any], source: SourceRef) -> None:
    wire = {**event}
    if "created_at" in event:
        wire["created_at"] = event["created_at"].isoformat()
    result = decode(b"k", json.dumps(wire).encode(), source, max_event_bytes=LIMIT)
    assert isinstance(result, Post), result
    for name in ("post_id", "text", "author_id", "lang"):
        assert getattr(result.event, name) == event.get(name)
    if "created_at" in event:
        assert result.event.created_at == event["created_at"]
        assert result.event_time == event["created_at"]
