"""Labelled data: JSON Lines, CSV or TSV files with a text column and a label column."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """A data file cannot be read as labelled examples; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True, slots=True)
class TaskData:
    """The examples of one task (one head), with its label order."""

    task: str
    labels: tuple[str, ...]
    train: list[Example]
    val: list[Example]

    def counts(self) -> Counter[str]:
        return Counter(e.label for e in self.train)


def read_examples(path: Path, text_col: str = "text", label_col: str = "label") -> list[Example]:
    """Read ``.jsonl``/``.json``, ``.csv`` or ``.tsv``; every row needs both columns."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    rows: list[dict[str, object]]
    with path.open(encoding="utf-8", newline="") as fh:
        if suffix in (".jsonl", ".json", ".ndjson"):
            rows = []
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not JSON ({exc})") from None
        elif suffix in (".csv", ".tsv"):
            rows = list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
        else:
            raise DataError(f"{path}: unknown format {suffix!r} (use .jsonl, .csv or .tsv)")
    out = []
    for n, row in enumerate(rows, 1):
        text, label = row.get(text_col), row.get(label_col)
        if not isinstance(text, str) or label is None or str(label) == "":
            raise DataError(f"{path}: row {n} lacks {text_col!r} or {label_col!r}")
        out.append(Example(text, str(label)))
    if not out:
        raise DataError(f"{path}: no examples")
    return out


def task_data(
    task: str,
    train: Sequence[Example],
    val: Sequence[Example],
    labels: Sequence[str] | None = None,
) -> TaskData:
    """Bundle a task's splits; the label order is given or sorted, and val may not invent labels."""
    order = tuple(labels) if labels else tuple(sorted({e.label for e in train}))
    unknown = {e.label for e in [*train, *val]} - set(order)
    if unknown:
        raise DataError(f"task {task}: labels {sorted(unknown)} are not in {list(order)}")
    return TaskData(task, order, list(train), list(val))
