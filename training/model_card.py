"""The model card: what the model is for, the data it learned from, and the figures a
moderation lead asks first (false alarms on everyday posts, per source), beside a baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from models.artifact import ArtifactConfig
from training.data import TaskData
from training.moderation import misinformation_table

# What each known source group is, for the card's domain statement.
SOURCE_NOTES = {
    "semeval-sentiment": "English tweets of 2013-2016 (SemEval Task 4A)",
    "constraint-covid": "COVID-19 tweets of 2020, real news and false claims "
    "(Constraint@AAAI-2021)",
    "fakenewsnet-gossipcop": "celebrity and entertainment news headlines, about 2000-2018, "
    "rated by GossipCop (FakeNewsNet)",
    "liar": "short US political statements of 2007-2016 rated by PolitiFact (LIAR; "
    "pants-fire/false/barely-true = fake)",
    "everyday": "everyday tweets of 2016-2019 on many topics (TweetEval emoji, emotion, hate, "
    "irony, offensive and stance tweets), all labelled no misinformation",
}


def model_card(
    config: ArtifactConfig,
    by_slice: Mapping[str, Any],
    moderation: Mapping[str, Any],
    tasks: Sequence[TaskData],
) -> str:
    lines = [
        "# modstream classifier",
        "",
        f"Base encoder: `{config.base_encoder}` "
        f"(weights sha256 `{config.base_encoder_sha256[:16]}…`),"
        f" mode `{config.mode}`, max length {config.max_length} tokens per window (longer posts"
        " are scored in several windows: the highest P(fake), the mean sentiment).",
        "",
        "## Intended use",
        "Scoring English social-media posts for sentiment (negative/neutral/positive) and for",
        "misinformation (real/fake), to route posts to allow, human review or block on a",
        "general stream. Not for other languages, or as the sole basis of account-level",
        "sanctions.",
        "",
        "## Data (its domain is what the model knows)",
        *data_lines(tasks),
        "",
    ]
    if moderation:
        lines += moderation_lines(moderation)
    lines += [
        "## Validation metrics by slice (each task on its own validation split)",
        "",
        "| task | slice | n | accuracy | macro-F1 | macro recall | F1 of fake | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, report in by_slice.items():
        for name, r in [("overall", report["overall"]), *report["slices"].items()]:
            fake = r["per_class"].get("fake", {}).get("f1")
            lines.append(
                f"| {task} | {name} | {r['n']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
                f"{r['macro_recall']:.3f} | {'' if fake is None else f'{fake:.3f}'} | "
                f"{r['ece']:.3f} |"
            )
    lines += [
        "",
        f"Temperatures: {config.temperatures}. Policy thresholds: {config.policy}.",
        "",
        "## Limits",
        *limit_lines(tasks),
        "",
    ]
    return "\n".join(lines)


def data_lines(tasks: Sequence[TaskData]) -> list[str]:
    lines = []
    for t in tasks:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(t.counts().items()))
        lines.append(f"- {t.task}: {len(t.train)} training examples ({counts}); {len(t.val)} val.")
        for source, n in sorted(t.source_counts().items()):
            note = SOURCE_NOTES.get(source, "no description on record")
            lines.append(f"  - `{source}` ({n}): {note}.")
    return lines


def moderation_lines(moderation: Mapping[str, Any]) -> list[str]:
    mis = moderation["misinformation"]
    lines = [
        "## What a moderation lead asks first",
        "",
        "False alarms on everyday posts (rows `everyday*`: posts that make no claim; "
        "`everyday-sentiment` are the sentiment validation tweets, never seen by the "
        "misinformation head) and, for the claim sources, F1 of fake, AUROC and precision at "
        "the block threshold. Validation splits; thresholds chosen on the stream mix below.",
        "",
        *misinformation_table(mis, "by_source"),
        "",
    ]
    base = moderation.get("baseline", {})
    if "misinformation" in base:
        lines += [
            f"Baseline ({base['model']}, trained on the same data, thresholds chosen the "
            "same way):",
            "",
            *misinformation_table(base["misinformation"], "by_group"),
            "",
        ]
    if "sentiment" in moderation:
        s = moderation["sentiment"]
        row = f"| model | {s['n']} | {s['macro_recall']:.3f} | {s['macro_f1']:.3f} |"
        lines += ["Sentiment:", "", "| | n | macro recall | macro-F1 |", "|---|---|---|---|", row]
        if "sentiment" in base:
            b = base["sentiment"]
            lines.append(f"| baseline | {b['n']} | {b['macro_recall']:.3f} | {b['macro_f1']:.3f} |")
        lines.append("")
    return lines


def limit_lines(tasks: Sequence[TaskData]) -> list[str]:
    known = sorted({s for t in tasks for s in t.source_counts()})
    return [
        "The misinformation head learned from these sources only: "
        + ", ".join(f"`{s}`" for s in known)
        + ". Claims on other topics, periods or platforms are outside what it was shown; "
        "re-check its false alarms and precision on a labelled sample of your own stream "
        "before trusting `block`. A fake label in the headline and statement sources belongs "
        "to the story or speaker as rated, not to the words alone, so some errors are "
        "unavoidable from text. Everyday posts that are angry, ironic, profane or carry a "
        "link are not misinformation: the false-alarm rows above measure exactly that. "
        "Short political remarks are its weak spot: statements in the style of the political "
        "claims it learned from lean fake (such everyday remarks go to review, not block). "
        "Sentiment test data is known to hold more negative posts than training data. "
        "Scores drift as language does: re-evaluate on fresh labelled samples.",
    ]
