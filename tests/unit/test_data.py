from pathlib import Path

import pytest

from training.data import DataError, Example, read_examples, task_data


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("d.jsonl", '{"tweet": "hello", "y": "pos"}\n\n{"tweet": "bye", "y": "neg"}\n'),
        ("d.csv", 'tweet,y\nhello,pos\n"bye",neg\n'),
        ("d.tsv", "tweet\ty\nhello\tpos\nbye\tneg\n"),
    ],
)
def test_formats_and_named_columns(tmp_path: Path, name: str, body: str) -> None:
    f = tmp_path / name
    f.write_text(body)
    got = read_examples(f, "tweet", "y", default_source="demo")
    assert got == [Example("hello", "pos", "demo"), Example("bye", "neg", "demo")]


@pytest.mark.parametrize(
    ("name", "body", "match"),
    [
        ("d.jsonl", '{"text": "a", "label": "x"}\n{oops\n', r"d\.jsonl:2: not JSON"),
        ("d.csv", "text,other\na,b\n", "row 1 lacks"),
        ("d.txt", "a\n", "unknown format"),
        ("d.jsonl", "\n", "no examples"),
    ],
)
def test_bad_files_say_where(tmp_path: Path, name: str, body: str, match: str) -> None:
    f = tmp_path / name
    f.write_text(body)
    with pytest.raises(DataError, match=match):
        read_examples(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "nope.jsonl")


def test_validation_may_not_invent_labels() -> None:
    with pytest.raises(DataError, match="maybe"):
        task_data("t", [Example("a", "yes")], [Example("b", "maybe")], ("yes", "no"))
    assert task_data("t", [Example("a", "b"), Example("c", "a")], []).labels == ("a", "b")
