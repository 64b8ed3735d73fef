import json
from datetime import UTC, datetime

import pytest

from worker.schema import DeadLetter, DeadLetterReason, Post, SourceRef, decode

SRC = SourceRef("posts", 2, 41, 1_700_000_000_000)


def _decode(value: bytes | None, **limits: int) -> Post | DeadLetter:
    kw = {"max_event_bytes": 1000, **limits}
    return decode(b"key", value, SRC, headers=[("h", b"v")], **kw)


def test_valid_event_keeps_fields_and_ignores_unknown_ones() -> None:
    post = _decode(
        json.dumps(
            {"post_id": "p1", "text": "hi", "author_id": "a", "lang": "en", "extra": [1, 2]}
        ).encode()
    )
    assert isinstance(post, Post)
    assert (post.event.post_id, post.event.text, post.event.author_id, post.event.lang) == (
        "p1",
        "hi",
        "a",
        "en",
    )
    assert post.source == SRC


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (1_714_564_800_000, datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_event_time_from_created_at(created_at: object, expected: datetime) -> None:
    post = _decode(json.dumps({"post_id": "p", "text": "t", "created_at": created_at}).encode())
    assert isinstance(post, Post)
    assert post.event_time == expected


def test_event_time_falls_back_to_record_timestamp() -> None:
    post = _decode(b'{"post_id": "p", "text": "t"}')
    assert isinstance(post, Post)
    assert post.event_time == datetime.fromtimestamp(1_700_000_000, tz=UTC)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe", DeadLetterReason.NOT_UTF8),
        (b"{not json", DeadLetterReason.NOT_JSON),
        (b"[1, 2]", DeadLetterReason.NOT_OBJECT),
        (b'{"text": "no id"}', DeadLetterReason.INVALID),
        (b'{"post_id": "p"}', DeadLetterReason.INVALID),
        (b'{"post_id": 5, "text": "id must be a string"}', DeadLetterReason.INVALID),
        (b'{"post_id": "p", "text": 12}', DeadLetterReason.INVALID),
        (b'{"post_id": "", "text": "empty id"}', DeadLetterReason.INVALID),
        (b'{"post_id": "p", "text": "t", "created_at": "yesterday"}', DeadLetterReason.INVALID),
        (b'{"post_id": "p", "text": "t", "created_at": true}', DeadLetterReason.INVALID),
        (b"{" + b" " * 2000 + b"}", DeadLetterReason.TOO_LARGE),
        (None, DeadLetterReason.NOT_JSON),
    ],
)
def test_bad_records_become_dead_letters_with_original_bytes(
    value: bytes | None, reason: DeadLetterReason
) -> None:
    letter = _decode(value)
    assert isinstance(letter, DeadLetter)
    assert letter.reason is reason
    assert letter.value == value and letter.key == b"key"
    assert letter.source == SRC and letter.headers == [("h", b"v")]
    assert letter.detail


def test_invalid_detail_names_the_field() -> None:
    letter = _decode(b'{"post_id": "p", "text": 12}')
    assert isinstance(letter, DeadLetter)
    assert "text" in letter.detail


@pytest.mark.parametrize("field", ["text", "author_id", "lang"])
def test_a_lone_surrogate_is_an_invalid_field_not_a_post(field: str) -> None:
    # Valid JSON ("\ud800" is an escape json.loads accepts) that no UTF-8 text can hold.
    event = {"post_id": "p", "text": "t", field: "ok \\ud800 here"}
    letter = _decode(json.dumps(event).replace("\\\\", "\\").encode())
    assert isinstance(letter, DeadLetter)
    assert letter.reason is DeadLetterReason.INVALID
    assert letter.detail.startswith(f"{field}: ")  # pydantic says so for fields of bounded length


def test_a_surrogate_pair_escape_is_text() -> None:
    post = _decode(b'{"post_id": "p", "text": "smile \\ud83d\\ude00"}')
    assert isinstance(post, Post) and post.event.text == "smile \U0001f600"


def test_a_truncated_letter_keeps_a_prefix_and_the_original_size() -> None:
    letter = _decode(b"x" * 1500)
    assert isinstance(letter, DeadLetter) and letter.reason == DeadLetterReason.TOO_LARGE
    assert letter.value_size is None  # decode keeps the whole value; the sink cuts it
    cut = letter.truncated(100)
    assert (cut.value, cut.value_size) == (b"x" * 100, 1500)
    assert cut.truncated(10).value_size == 1500  # cut again: still the original's size
    assert letter.truncated(1500) is letter and letter.truncated(-1).value == b""


def test_a_null_header_value_is_kept_in_the_dead_letter() -> None:
    # Kafka allows null header values; kafka-python reads them as None.
    letter = decode(None, b"{", SRC, max_event_bytes=1000, headers=[("trace", None)])
    assert isinstance(letter, DeadLetter) and list(letter.headers) == [("trace", None)]
