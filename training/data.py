"""Labelled data: JSON Lines, CSV or TSV files with a text column and a label column."""

from __future__ import annotations

import csv
import json
import re
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
    source: str = ""  # the origin data set (and split), for per-source sampling and reports


def source_group(source: str) -> str:
    """The group a source is sampled and reported under: the split suffix dropped, and every
    kind of everyday post (``tweeteval-*``) pooled as ``everyday``."""
    name = re.sub(r"-(train|val|valid|test)$", "", source)
    return "everyday" if name.startswith("tweeteval") else name


@dataclass(frozen=True, slots=True)
class TaskData:
    """The examples of one task (one head), with its label order."""

    task: str
    labels: tuple[str, ...]
    train: list[Example]
    val: list[Example]

    def counts(self) -> Counter[str]:
        return Counter(e.label for e in self.train)

    def source_counts(self) -> Counter[str]:
        """Training examples per source group."""
        return Counter(source_group(e.source) for e in self.train)


def read_examples(
    path: Path,
    text_col: str = "text",
    label_col: str = "label",
    default_source: str | None = None,
    source_col: str = "source",
) -> list[Example]:
    """Read ``.jsonl``/``.json``, ``.csv`` or ``.tsv``; every row needs both columns. A row's
    source is its ``source_col`` value, else ``default_source``, else the file's folder name."""
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
        source = row.get(source_col)
        out.append(
            Example(
                text,
                str(label),
                str(source) if source else (default_source or path.parent.name),
            )
        )
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
