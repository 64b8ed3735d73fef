"""The moderation lead's view of a misinformation signal: a stream where misinformation is rare.

Validation data is nothing like a stream: its claim sources are about half fake, while a
real feed is mostly everyday posts. Thresholds chosen on a 50/50 split block far too much
once everyday chatter dominates, so here each validation post is weighted to build a
*stream mix*: everyday posts carry ``everyday_share`` of the mass, and each claim source an
equal part of the rest. Precision on that mix is what a moderator would see.

Per source, the report answers what a moderation lead asks first:
- everyday posts (no misinformation): the share labelled fake, blocked and sent to review;
- claim sources: F1 of fake, AUROC, and precision and recall at the block threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from training.data import source_group

EVERYDAY = "everyday"
# The everyday share of the validation stream mix: nine posts in ten make no claim at all.
EVERYDAY_SHARE = 0.9


def is_everyday(group: str) -> bool:
    return group == EVERYDAY or group.startswith(f"{EVERYDAY}-")


def stream_weights(groups: Sequence[str], everyday_share: float = EVERYDAY_SHARE) -> np.ndarray:
    """Per-post weights that make a validation set look like a stream (weights sum to 1).

    Everyday groups share ``everyday_share`` equally; claim sources share the rest equally.
    With no everyday posts (or no claim posts) the other side takes all the mass."""
    g = np.asarray(groups)
    names = sorted(set(groups))
    everyday = [n for n in names if is_everyday(n)]
    claims = [n for n in names if not is_everyday(n)]
    share = everyday_share if everyday and claims else (1.0 if everyday else 0.0)
    weights = np.zeros(len(g), dtype=np.float64)
    for side, mass in ((everyday, share), (claims, 1.0 - share)):
        for name in side:
            mask = g == name
            weights[mask] = mass / len(side) / mask.sum()
    return weights


def threshold_for_weighted_precision(
    scores: np.ndarray, positive: np.ndarray, weights: np.ndarray, precision: float
) -> float:
    """The lowest score threshold whose weighted precision reaches ``precision`` (1.0, i.e.
    never, if none does). Ties are kept together: a threshold admits every equal score."""
    order = np.argsort(-scores, kind="stable")
    s, w = scores[order], weights[order]
    tp = np.cumsum(w * positive[order])
    total = np.cumsum(w)
    # Only cut where the next score differs, so the precision belongs to a real threshold.
    last_of_tie = np.append(s[1:] != s[:-1], True)
    prec = np.divide(tp, total, out=np.zeros_like(tp), where=total > 0)
    ok = np.nonzero((prec >= precision) & last_of_tie)[0]
    if len(ok) == 0:
        return 1.0
    return float(s[ok.max()])


def fake_thresholds(
    p_fake: np.ndarray,
    is_fake: np.ndarray,
    weights: np.ndarray,
    block_precision: float,
    review_precision: float,
) -> tuple[float, float]:
    """``block_fake`` where stream precision of fake reaches ``block_precision`` (never below
    even odds), and ``review_fake`` where it reaches ``review_precision``: a moderator's
    time is well spent when at least that share of what they review is misinformation."""
    block = max(0.5, threshold_for_weighted_precision(p_fake, is_fake, weights, block_precision))
    review = threshold_for_weighted_precision(p_fake, is_fake, weights, review_precision)
    return round(block, 6), round(min(block, review), 6)


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def source_row(
    is_fake: np.ndarray, p_fake: np.ndarray, block: float, review: float
) -> dict[str, Any]:
    """Figures for one source: always the shares labelled fake, blocked and reviewed; F1,
    AUROC and precision/recall at the block threshold where the source has fake posts."""
    blocked = p_fake >= block
    reviewed = (p_fake >= review) & ~blocked
    row: dict[str, Any] = {
        "n": len(is_fake),
        "fake": int(is_fake.sum()),
        "labelled_fake": _share(p_fake >= 0.5),
        "blocked": _share(blocked),
        "reviewed": _share(reviewed),
    }
    if row["fake"]:
        row["f1_fake"] = float(f1_score(is_fake, p_fake >= 0.5, zero_division=0))
        row["recall_at_block"] = float(blocked[is_fake == 1].mean())
        row["precision_at_block"] = float(is_fake[blocked].mean()) if blocked.any() else None
        if row["fake"] < row["n"]:
            row["auroc"] = float(roc_auc_score(is_fake, p_fake))
    return row


def misinformation_report(
    sources: Sequence[str],
    is_fake: np.ndarray,
    p_fake: np.ndarray,
    policy: Mapping[str, float],
    everyday_share: float = EVERYDAY_SHARE,
) -> dict[str, Any]:
    """Per source, per source group and on the stream mix, at the policy's thresholds."""
    block, review = float(policy["block_fake"]), float(policy["review_fake"])
    src = np.asarray(sources)
    groups = np.array([source_group(s) for s in sources])
    report: dict[str, Any] = {"thresholds": {"block_fake": block, "review_fake": review}}
    for key, names in (("by_source", src), ("by_group", groups)):
        report[key] = {
            name: source_row(is_fake[names == name], p_fake[names == name], block, review)
            for name in sorted(set(names.tolist()))
        }
    report["overall"] = source_row(is_fake, p_fake, block, review)
    weights = stream_weights(groups.tolist(), everyday_share)
    blocked = p_fake >= block
    flagged = p_fake >= review
    report["stream"] = {
        "everyday_share": everyday_share,
        "fake_share": float((weights * is_fake).sum()),
        "precision_at_block": _weighted_precision(is_fake, blocked, weights),
        "recall_at_block": _weighted_recall(is_fake, blocked, weights),
        "precision_at_review": _weighted_precision(is_fake, flagged, weights),
        "recall_at_review": _weighted_recall(is_fake, flagged, weights),
    }
    return report


def _weighted_precision(is_fake: np.ndarray, hit: np.ndarray, w: np.ndarray) -> float | None:
    mass = float(w[hit].sum())
    return float((w * is_fake)[hit].sum() / mass) if mass > 0 else None


def _weighted_recall(is_fake: np.ndarray, hit: np.ndarray, w: np.ndarray) -> float | None:
    mass = float((w * is_fake).sum())
    return float((w * is_fake)[hit].sum() / mass) if mass > 0 else None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def misinformation_table(report: Mapping[str, Any], key: str = "by_source") -> list[str]:
    """Markdown: one row per source (or group), then the stream mix."""
    cols = (
        *("n", "fake", "labelled_fake", "blocked", "reviewed", "f1_fake", "auroc"),
        *("precision_at_block", "recall_at_block"),
    )
    lines = [
        "| source | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    rows = [*report[key].items(), ("overall (as sampled)", report["overall"])]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    s = report["stream"]
    lines += [
        "",
        f"On a stream mix of {s['everyday_share']:.0%} everyday posts (fake share "
        f"{s['fake_share']:.1%}): precision of block {_fmt(s['precision_at_block'])}, recall "
        f"{_fmt(s['recall_at_block'])}; precision of block or review "
        f"{_fmt(s['precision_at_review'])}, recall {_fmt(s['recall_at_review'])}. "
        f"Thresholds: block at P(fake) >= {report['thresholds']['block_fake']:.3f}, review at "
        f">= {report['thresholds']['review_fake']:.3f}.",
    ]
    return lines
