"""`modstream evaluate` on the shipped model: report files, slices, plots, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import models
from models.artifact import artifact_version
from training.data import DataError, Example, read_examples
from training.evaluate import default_out_dir, evaluate_artifact
from worker.cli import main

pytestmark = pytest.mark.model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (text, label); link, mention and hashtag counts below are counted by hand.
POSTS = [
    ("Vaccines contain microchips that track you, share before they delete this! #wakeup", "fake"),
    ("The city council approved the new budget for road repairs on Tuesday.", "real"),
    (
        "Drinking bleach cures the virus, doctors don't want you to know "
        "https://cure-truth.example/bleach",
        "fake",
    ),
    (
        "Health ministry reports 120 new cases this week, full data at "
        "https://health.example.gov/report",
        "real",
    ),
    ("@newsdesk the bridge closure starts Monday according to the transport department", "real"),
    ("5G towers are spreading the disease, @everyone wake up #5G #truth", "fake"),
    ("NASA confirms the moon landing was staged in a studio www.truthnews.example", "fake"),
    ("Local school wins regional science fair, congratulations @riverside_high", "real"),
    ("Scientists publish peer-reviewed study on coral reef recovery in Nature #science", "real"),
    ("The earth is flat and the government hides the edge with an ice wall", "fake"),
    (
        "Election results certified by the state after a routine audit, see "
        "http://elections.example/results",
        "real",
    ),
    ("Eating garlic every hour makes you immune to all viruses, my aunt proved it", "fake"),
]
WITH_LINKS, WITH_MENTIONS, WITH_HASHTAGS = 4, 3, 3


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "posts.jsonl", POSTS)


@pytest.fixture(scope="module")
def evaluated(
    data_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    out_dir = tmp_path_factory.mktemp("report")
    examples = read_examples(data_file)
    report = evaluate_artifact(models.DEFAULT_ARTIFACT_DIR, "misinformation", examples, out_dir)
    return report, out_dir


def test_report_json_has_the_overall_figures(evaluated: tuple[dict[str, Any], Path]) -> None:
    returned, out_dir = evaluated
    report = json.loads((out_dir / "report.json").read_text())
    assert report == returned
    assert report["task"] == "misinformation"
    assert report["model_version"] == artifact_version(models.DEFAULT_ARTIFACT_DIR)
    overall = report["overall"]
    assert overall["n"] == len(POSTS)
    assert sum(map(sum, overall["confusion_matrix"])) == len(POSTS)
    assert set(overall["per_class"]) == {"real", "fake"}
    assert overall["per_class"]["fake"]["support"] == 6
    for key in ("accuracy", "macro_f1", "macro_recall", "ece"):
        assert 0.0 <= overall[key] <= 1.0, key
    assert sum(b["count"] for b in report["reliability"]) == len(POSTS)


def test_slices_count_links_mentions_and_hashtags(evaluated: tuple[dict[str, Any], Path]) -> None:
    report, _ = evaluated
    slices = report["slices"]
    assert slices["with links"]["n"] == WITH_LINKS
    assert slices["with mentions"]["n"] == WITH_MENTIONS
    assert slices["with hashtags"]["n"] == WITH_HASHTAGS
    for name, r in slices.items():
        assert sum(map(sum, r["confusion_matrix"])) == r["n"], name
    lengths = ["short (<60 chars)", "medium (60-139 chars)", "long (140+ chars)"]
    assert sum(slices[s]["n"] for s in lengths if s in slices) == len(POSTS)
    assert set(slices) | set(report["empty_slices"]) >= set(lengths)


def test_markdown_links_both_plots_and_they_are_pngs(
    evaluated: tuple[dict[str, Any], Path],
) -> None:
    _, out_dir = evaluated
    md = (out_dir / "report.md").read_text()
    assert "](confusion_matrix.png)" in md
    assert "](reliability.png)" in md
    assert "| with links | 4 |" in md
    for name in ("confusion_matrix.png", "reliability.png"):
        assert (out_dir / name).read_bytes().startswith(PNG_SIGNATURE), name


def test_an_unknown_label_is_a_data_error(tmp_path: Path) -> None:
    examples = [Example("Aliens built the pyramids", "fake"), Example("It is a joke", "satire")]
    with pytest.raises(DataError, match=r"\['satire'\] \(first at row 2\) are not among"):
        evaluate_artifact(models.DEFAULT_ARTIFACT_DIR, "misinformation", examples, tmp_path)
    assert not (tmp_path / "report.json").exists()


def test_an_unknown_task_is_a_data_error(tmp_path: Path) -> None:
    examples = [Example("you are awful", "toxic")]
    with pytest.raises(DataError, match=r"no 'toxicity' head \(it has \['misinformation'"):
        evaluate_artifact(models.DEFAULT_ARTIFACT_DIR, "toxicity", examples, tmp_path)


def test_the_default_output_folder_is_named_after_version_and_task() -> None:
    version = artifact_version(models.DEFAULT_ARTIFACT_DIR)
    got = default_out_dir(models.DEFAULT_ARTIFACT_DIR, "sentiment")
    assert got == Path("reports") / f"{version}-sentiment"


def test_cli_prints_the_accuracy_line_and_writes_the_report(
    data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "cli-report"
    argv = ["evaluate", "--model", str(models.DEFAULT_ARTIFACT_DIR), "--data", str(data_file)]
    assert main([*argv, "--task", "misinformation", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert f"misinformation on {data_file}: accuracy " in out
    assert "macro-F1" in out and "ECE" in out
    assert "| with hashtags | 3 |" in out
    assert (out_dir / "report.json").is_file() and (out_dir / "reliability.png").is_file()


def test_cli_reports_a_data_error_without_a_traceback(
    data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--data", str(data_file), "--task", "toxicity", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "modstream evaluate: the model has no 'toxicity' head" in err
