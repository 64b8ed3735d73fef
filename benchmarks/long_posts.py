"""Long posts on the validation splits: false alarms and hidden claims, per fold of the rows.

A long post is cut into rows (``models.windows``) and its rows' scores are folded into one.
This measures, with the shipped model, how each fold labels

- everyday posts made by joining N everyday tweets (the sentiment validation tweets and
  misinformation_general's TweetEval validation tweets: its everyday ``real`` class),
  N = 5, 15 and 50: any post labelled fake is a false alarm;
- the same posts with one false claim inserted at a random position (a ``fake`` claim of
  the COVID misinformation validation split, and one of misinformation_general's): recall,
  beside the claims scored alone.

Labelled fake: P(fake) >= the artifact policy's ``review_fake``; blocked: >= ``block_fake``.
"kept" is the share of the claims blocked alone that stay blocked inside their post (what
padding must not take away). The folds take the most-fake row and multiply its P(real) by
k: the post's rows, or the model-length windows its rows' tokens fill (ceil(tokens / 126)),
or not at all; "ramp from X": only the part of P(real) above 1 - X is multiplied, so a row
at or above X is kept. ``shipped`` is :func:`models.windows.fold_windows` as the Predictor
calls it. It also prints how often one everyday row alone reaches each threshold and
``models.windows.SURE_FAKE``: check that level again after retraining.

Each distinct row is scored once (as its own one-row post) and reused, since the folds only
differ in how they combine the rows' scores. Fixed seed; 2,700 posts and about 17,000
distinct rows with the defaults, 2-5 minutes on 2 CPU cores. Reads the data only when run
(from the repository root):

    python benchmarks/long_posts.py [--data-dir ../shared/data] [--posts 300] [--seed 11]
        [--sizes 5,15,50] [--out results.json] [--dump rows.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from models import DEFAULT_ARTIFACT_DIR
from models.base import MISINFORMATION, Encoded, Scores
from models.runtime import Predictor, load_predictor
from models.windows import SURE_FAKE, fold_windows

BATCH_ROWS = 64


@dataclass(frozen=True)
class Post:
    kind: str  # "everyday", "claim covid", "claim general"
    size: int  # everyday tweets in it
    text: str
    claim: str | None = None


@dataclass(frozen=True)
class Scored:
    post: Post
    rows: list[Scores]
    spanned: int  # model-length windows' worth of tokens its rows hold


# A fold variant: (rows' scores, windows spanned, block threshold) -> the post's P(fake).
Fold = Callable[[Sequence[Scores], int, float], float]


def read_jsonl(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fakest(rows: Sequence[Scores]) -> float:
    return max(r[MISINFORMATION]["fake"] for r in rows)


def bonferroni(p_fake: float, k: int) -> float:
    return max(0.0, 1.0 - k * (1.0 - p_fake))


def ramp(p_fake: float, k: int, sure: float) -> float:
    """P(real) up to ``1 - sure`` kept; the part above it multiplied by ``k`` (continuous)."""
    real, floor = 1.0 - p_fake, 1.0 - sure
    if real <= floor:
        return p_fake
    return max(0.0, 1.0 - (floor + k * (real - floor)))


def windows_spanned(rows: Sequence[Sequence[int]], body: int, specials: int) -> int:
    """Model-length windows' worth of content tokens the rows hold, rounded up."""
    return max(1, -(-sum(len(r) - specials for r in rows) // body))


def shipped(rows: Sequence[Scores], spanned: int, block: float) -> float:
    return fold_windows(rows)[MISINFORMATION]["fake"]


VARIANTS: dict[str, Fold] = {
    "k = rows (old)": lambda r, w, b: bonferroni(fakest(r), len(r)),
    "k = windows": lambda r, w, b: bonferroni(fakest(r), w),
    "no correction": lambda r, w, b: fakest(r),
    "k = windows, capped at 4": lambda r, w, b: bonferroni(fakest(r), min(w, 4)),
    "k = windows, ramp from block": lambda r, w, b: ramp(fakest(r), w, b),
    "k = windows, ramp from sure": lambda r, w, b: ramp(fakest(r), w, SURE_FAKE),
    "k = rows, ramp from sure": lambda r, w, b: ramp(fakest(r), len(r), SURE_FAKE),
    "shipped: k = rows, sure rows kept": shipped,
}


def build_posts(data: Path, sizes: Sequence[int], per_size: int, seed: int) -> list[Post]:
    """Everyday posts of each size, each also with a COVID claim and a general claim."""
    general = read_jsonl(data / "misinformation_general" / "val.jsonl")
    everyday = [r["text"] for r in read_jsonl(data / "sentiment" / "val.jsonl")]
    everyday += [
        r["text"] for r in general if r["label"] == "real" and r["source"].startswith("tweeteval")
    ]
    claims = {
        "claim covid": [
            r["text"]
            for r in read_jsonl(data / "misinformation" / "val.jsonl")
            if r["label"] == "fake"
        ],
        "claim general": [r["text"] for r in general if r["label"] == "fake"],
    }
    rng = random.Random(seed)
    posts: list[Post] = []
    for size in sizes:
        for _ in range(per_size):
            tweets = rng.sample(everyday, size)
            posts.append(Post("everyday", size, " ".join(tweets)))
            for kind, pool in claims.items():
                claim = rng.choice(pool)
                at = rng.randint(0, size)
                text = " ".join([*tweets[:at], claim, *tweets[at:]])
                posts.append(Post(kind, size, text, claim))
    return posts


def score_rows(
    predictor: Predictor, rows: Sequence[tuple[int, ...]]
) -> dict[tuple[int, ...], Scores]:
    """Each distinct row scored once, as a post of one row (whose fold is the row itself)."""
    distinct = sorted(set(rows), key=len)  # similar lengths batch with little padding
    out: dict[tuple[int, ...], Scores] = {}
    started = time.perf_counter()
    for i in range(0, len(distinct), BATCH_ROWS):
        batch = distinct[i : i + BATCH_ROWS]
        out.update(
            zip(batch, predictor.predict_encoded([Encoded((r,)) for r in batch]), strict=True)
        )
        if (i // BATCH_ROWS) % 50 == 0:
            print(
                f"  {i + len(batch)}/{len(distinct)} rows, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
    return out


def rate(values: Sequence[bool]) -> float:
    return 100.0 * sum(values) / len(values) if values else float("nan")


def report(
    scored: Sequence[Scored], alone: dict[str, float], review: float, block: float
) -> dict[str, object]:
    """Per variant and post size: % labelled fake and % blocked for each kind of post."""
    out: dict[str, object] = {}
    sizes = sorted({s.post.size for s in scored})
    for name, fold in VARIANTS.items():
        per_size: dict[str, object] = {}
        for size in sizes:
            cells: dict[str, object] = {}
            group = [s for s in scored if s.post.size == size]
            for kind in ("everyday", "claim covid", "claim general"):
                folded = [fold(s.rows, s.spanned, block) for s in group if s.post.kind == kind]
                cells[kind] = {
                    "fake": rate([p >= review for p in folded]),
                    "blocked": rate([p >= block for p in folded]),
                }
            sure = [s for s in group if s.post.claim is not None and alone[s.post.claim] >= block]
            cells["kept"] = rate([fold(s.rows, s.spanned, block) >= block for s in sure])
            per_size[str(size)] = cells
        out[name] = per_size
    return out


def claims_alone(
    scored: Sequence[Scored], alone: dict[str, float], review: float, block: float
) -> dict[str, object]:
    out: dict[str, object] = {}
    for kind in ("claim covid", "claim general"):
        ps = [alone[s.post.claim] for s in scored if s.post.kind == kind and s.post.claim]
        out[kind] = {
            "fake": rate([p >= review for p in ps]),
            "blocked": rate([p >= block for p in ps]),
            "n": len(ps),
        }
    return out


def row_tail(scored: Sequence[Scored], review: float, block: float) -> dict[str, float]:
    """How often one row of an everyday post alone reaches each threshold."""
    ps = [r[MISINFORMATION]["fake"] for s in scored if s.post.kind == "everyday" for r in s.rows]
    return {
        "rows": len(ps),
        "fake": rate([p >= review for p in ps]),
        "blocked": rate([p >= block for p in ps]),
        "sure": rate([p >= SURE_FAKE for p in ps]),
        "highest": max(ps, default=0.0),
        "mean rows a post": len(ps) / max(1, sum(s.post.kind == "everyday" for s in scored)),
    }


def markdown(results: dict[str, object], sizes: Sequence[int]) -> str:
    head = ["fold"]
    for size in sizes:
        head += [
            f"{size}: everyday",
            f"{size}: claim covid",
            f"{size}: claim general",
            f"{size}: kept",
        ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, per_size in results.items():
        cells = [name]
        for size in sizes:
            c = per_size[str(size)]  # type: ignore[index]
            cells += [
                f"{c[k]['fake']:.1f}% / {c[k]['blocked']:.1f}%"
                for k in ("everyday", "claim covid", "claim general")
            ]
            cells.append(f"{c['kept']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--posts", type=int, default=300, help="everyday posts per size")
    parser.add_argument("--sizes", default="5,15,50", help="everyday tweets a post")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--dump", type=Path, help="write each post's kind, size, windows and row P(fake) here"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    started = time.perf_counter()
    predictor = load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu")
    review, block = predictor.policy["review_fake"], predictor.policy["block_fake"]
    posts = build_posts(args.data_dir, sizes, args.posts, args.seed)
    claims = sorted({p.claim for p in posts if p.claim is not None})
    encoded = predictor.prepare([p.text for p in posts])
    encoded_claims = predictor.prepare(claims)
    rows = [w for e in (*encoded, *encoded_claims) for w in e.windows]
    print(f"{len(posts)} posts, {len(rows)} rows, {len(set(rows))} distinct", file=sys.stderr)
    row_scores = score_rows(predictor, rows)

    body = predictor.max_length - 2  # less [CLS] and [SEP], a BERT tokenizer's
    scored = [
        Scored(p, [row_scores[w] for w in e.windows], windows_spanned(e.windows, body, 2))
        for p, e in zip(posts, encoded, strict=True)
    ]
    alone = {
        c: fold_windows([row_scores[w] for w in e.windows])[MISINFORMATION]["fake"]
        for c, e in zip(claims, encoded_claims, strict=True)
    }
    results = {
        "model": predictor.version,
        "policy": {"review_fake": review, "block_fake": block},
        "posts_per_size": args.posts,
        "seed": args.seed,
        "claims_alone": claims_alone(scored, alone, review, block),
        "everyday_rows": row_tail(scored, review, block),
        "folds": report(scored, alone, review, block),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(results, indent=1))
    print(markdown(results["folds"], sizes))  # type: ignore[arg-type]
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.dump:
        args.dump.write_text(
            json.dumps({"policy": results["policy"], "posts": dump(scored, alone)})
        )


def dump(scored: Sequence[Scored], alone: dict[str, float]) -> list[dict[str, object]]:
    """Each post's rows' P(fake), to try other folds without the model."""
    return [
        {
            "kind": s.post.kind,
            "size": s.post.size,
            "spanned": s.spanned,
            "alone": alone[s.post.claim] if s.post.claim else None,
            "p_fake": [r[MISINFORMATION]["fake"] for r in s.rows],
        }
        for s in scored
    ]


if __name__ == "__main__":
    main()
