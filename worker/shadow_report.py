"""The agreement report of a shadow comparison: JSON, Markdown and a PNG.

What a moderation lead needs to decide on a candidate model from their own traffic: how
often the two models agree, a confusion matrix of actions (live rows, candidate columns),
the posts that flip the most (ids only; the text only when it was stored, which
MODSTREAM_STORE_TEXT decides), and both models' score distributions. Posts the candidate gave
no usable score for are counted, not compared; so are comparisons holding a score that is not
finite (a log written before candidate scores were checked): they are never binned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.schema import Action
from worker.shadow import CandidateError, Comparison, ShadowEntry

ACTIONS = [a.value for a in Action]
BINS = 10


def _histogram(values: Sequence[float]) -> list[int]:
    counts = [0] * BINS
    for v in values:
        counts[min(BINS - 1, max(0, int(v * BINS)))] += 1
    return counts


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = {q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.9, 0.99)}
    return {
        "mean": round(sum(ordered) / len(ordered), 6),
        "p50": round(pick[0.5], 6),
        "p90": round(pick[0.9], 6),
        "p99": round(pick[0.99], 6),
    }


def _flip(c: Comparison) -> dict[str, Any]:
    row: dict[str, Any] = {
        "post_id": c.post_id,
        "partition": c.partition,
        "offset": c.offset,
        "live_action": c.live_action,
        "candidate_action": c.candidate_action,
        "live_fake": round(c.live_fake, 4),
        "candidate_fake": round(c.candidate_fake, 4),
        "live_negative": round(c.live_negative, 4),
        "candidate_negative": round(c.candidate_negative, 4),
        "score_change": round(c.score_change, 4),
    }
    if c.text is not None:
        row["text"] = c.text
    return row


def _finite(c: Comparison) -> bool:
    scores = (c.live_fake, c.candidate_fake, c.live_negative, c.candidate_negative)
    return all(math.isfinite(v) for v in scores)


def build_report(
    entries: Sequence[ShadowEntry], live: str, candidate: str, top: int = 20
) -> dict[str, Any]:
    """Everything the report says, as one JSON-ready mapping. Agreement, actions, flips and
    distributions are of the posts both models scored (``compared``); ``posts`` counts every
    post, ``candidate_errors`` those the candidate gave no score for, ``non_finite`` those
    left out for a score that is not finite."""
    comparisons = [e for e in entries if isinstance(e, Comparison) and _finite(e)]
    errors = sum(isinstance(e, CandidateError) for e in entries)
    n = len(comparisons)
    confusion = {a: dict.fromkeys(ACTIONS, 0) for a in ACTIONS}
    for c in comparisons:
        confusion[c.live_action][c.candidate_action] += 1
    flips = [c for c in comparisons if c.flipped]
    flips.sort(key=lambda c: (-c.score_change, c.partition, c.offset))
    scores = {
        "fake": ([c.live_fake for c in comparisons], [c.candidate_fake for c in comparisons]),
        "negative": (
            [c.live_negative for c in comparisons],
            [c.candidate_negative for c in comparisons],
        ),
    }
    return {
        "live_model": live,
        "candidate_model": candidate,
        "posts": len(entries),
        "compared": n,
        "candidate_errors": errors,
        "non_finite": len(entries) - n - errors,
        "agreement": round(1 - len(flips) / n, 6) if n else None,
        "flips": len(flips),
        "flip_share": round(len(flips) / n, 6) if n else None,
        "actions": {
            "live": {a: sum(confusion[a].values()) for a in ACTIONS},
            "candidate": {a: sum(confusion[r][a] for r in ACTIONS) for a in ACTIONS},
        },
        "confusion": confusion,
        "top_flips": [_flip(c) for c in flips[:top]],
        "scores": {
            name: {
                "bins": [round(i / BINS, 2) for i in range(BINS + 1)],
                "live": {"histogram": _histogram(a), **_quantiles(a)},
                "candidate": {"histogram": _histogram(b), **_quantiles(b)},
            }
            for name, (a, b) in scores.items()
        },
    }


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"


def _non_finite_line(report: dict[str, Any]) -> list[str]:
    if not report["non_finite"]:
        return []
    return [f"- Left out for a score that is not finite: {report['non_finite']}"]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Shadow comparison: {report['live_model']} (live) vs {report['candidate_model']}",
        "",
        f"- Posts: {report['posts']}; compared: {report['compared']}",
        f"- No candidate score (candidate errors): {report['candidate_errors']}",
        *_non_finite_line(report),
        f"- Agreement: {_pct(report['agreement'])}; flips: {report['flips']} "
        f"({_pct(report['flip_share'])})",
        "",
        "## Actions (rows: live, columns: candidate)",
        "",
        "| live \\ candidate | " + " | ".join(ACTIONS) + " | total |",
        "|---|" + "---:|" * (len(ACTIONS) + 1),
    ]
    for a in ACTIONS:
        row = report["confusion"][a]
        cells = " | ".join(str(row[b]) for b in ACTIONS)
        lines.append(f"| {a} | {cells} | {sum(row.values())} |")
    lines += ["", "## Top flips by score change", ""]
    if report["top_flips"]:
        with_text = any("text" in f for f in report["top_flips"])
        head = "| post_id | live | candidate | P(fake) live -> cand | P(neg) live -> cand |"
        lines += [head + (" text |" if with_text else ""), "|---" * (5 + with_text) + "|"]
        for f in report["top_flips"]:
            text = f" {f.get('text', '')!s:.80} |" if with_text else ""
            lines.append(
                f"| {f['post_id']} | {f['live_action']} | {f['candidate_action']} | "
                f"{f['live_fake']:.3f} -> {f['candidate_fake']:.3f} | "
                f"{f['live_negative']:.3f} -> {f['candidate_negative']:.3f} |{text}"
            )
    else:
        lines.append("No post changes action.")
    lines += ["", "## Score distributions", "", "| score | model | mean | p50 | p90 | p99 |"]
    lines.append("|---|---|---:|---:|---:|---:|")
    for name, dist in report["scores"].items():
        for who in ("live", "candidate"):
            d = dist[who]
            if "mean" in d:
                lines.append(
                    f"| {name} | {who} | {d['mean']:.3f} | {d['p50']:.3f} | {d['p90']:.3f} | "
                    f"{d['p99']:.3f} |"
                )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Confusion matrix and both score histograms in one PNG (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    matrix = [[report["confusion"][a][b] for b in ACTIONS] for a in ACTIONS]
    ax = axes[0]
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(ACTIONS)), ACTIONS)
    ax.set_yticks(range(len(ACTIONS)), ACTIONS)
    ax.set_xlabel(f"candidate ({report['candidate_model']})")
    ax.set_ylabel(f"live ({report['live_model']})")
    ax.set_title(f"actions, {_pct(report['flip_share'])} flipped")
    darkest = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            color = "white" if value > darkest / 2 else "black"  # readable on dark cells
            ax.text(j, i, str(value), ha="center", va="center", color=color)
    for ax, name in zip(axes[1:], ("fake", "negative"), strict=True):
        dist = report["scores"][name]
        edges = dist["bins"]
        width = edges[1] - edges[0]
        for who, offset in (("live", 0.0), ("candidate", width / 2)):
            ax.bar(
                [e + offset for e in edges[:-1]],
                dist[who]["histogram"],
                width=width / 2,
                align="edge",
                label=who,
            )
        ax.set_title(f"P({name})")
        ax.set_xlabel("score")
        ax.set_ylabel("posts")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and report.png in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "shadow-report.json",
        "markdown": out_dir / "shadow-report.md",
        "png": out_dir / "shadow-report.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    plot(report, paths["png"])
    return paths
