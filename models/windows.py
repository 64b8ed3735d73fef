"""Long posts as rows of the model's length, and their per-row scores folded back.

A post longer than the model's ``max_length`` is not truncated (a false claim padded behind
harmless text would never be seen). It is cut at sentence ends into rows, each scored on
its own, and the rows are folded into one result for the post. Rows are as short as the
cap on rows per post allows: a claim scored together with a hundred tokens of harmless
text is diluted (the encoder mean-pools its tokens), one scored alone is not. So
sentences are packed together, up to 16 tokens a row, then 32, 64 and the model's length,
only as far as needed to stay within the cap; a sentence longer than the model's length
is cut into overlapping token windows. A post that still needs more rows keeps its head,
its tail and evenly spaced rows between. Pure logic on token ids and probabilities: no
tokenizer, no torch.

A post's P(fake) is its most-fake row, so every row is another chance of a false alarm:
the thresholds were chosen for posts scored as one row, and a sentence cut out of its
context reads like a headline. So the most-fake row's P(real) is multiplied by the number
of rows (Bonferroni's correction: a post of k rows must be k times as sure), capped at 1,
unless that row's P(fake) is at least ``SURE_FAKE`` (0.99): such a row is taken as it is.
A one-row post is unchanged. The guarantee: a row the model is sure of is never lowered by
any amount of harmless text around it, or by any cut, as long as it is scored (a post over
the cap skips rows between its head and tail). With the correction alone, a claim at 0.99
fell to 0.91 one token past a window (9 rows) and to 0.5 among 50 short sentences.
Below 0.99 the correction still counts rows, so padding can still dilute a claim the model
is less sure of; counting model-length windows instead (ceil(tokens / 126)), which no cut
into short rows could inflate, labels about 10% of 15- and 50-tweet everyday posts fake.

Measured by ``benchmarks/long_posts.py`` (seed 11) with the shipped model: posts joining
5, 15 or 50 validation everyday tweets (sentiment and TweetEval), 300 of each, and the same
with one validation false claim inserted (COVID, or general: GossipCop and LIAR). Shown:
% labelled fake (>= review_fake 0.523) / % blocked (>= block_fake 0.960) at 5, 15 and 50
tweets; "kept": the claims blocked alone that stay blocked in their post. The claims
alone: COVID 95.1% / 83.3%, general 79.9% / 9.6%. Of 21,981 rows of everyday posts, 6.7%
reach review_fake alone, 0.15% block_fake and 0.009% (2; the highest 0.9923) 0.99, which
77% of the COVID claims reach alone. One post is 0.3%.

| fold | everyday (false alarms) | COVID claim: blocked | general: fake | kept |
| --- | --- | --- | --- | --- |
| k = rows (old fold) | 0.3/0.3, 1.3/0, 0.3/0 | 66.3, 60.7, 33.7 | 6.7, 4.0, 0.0 | 70, 60, 36 |
| k = windows | 6.7/0.3, 9.7/0, 8.7/0 | 76.0, 75.0, 64.0 | 28.7, 23.7, 14.3 | 79, 74, 67 |
| (a) k = windows | 6.7/0.3, 10/1.0, 9.7/2.7 | 76.7, 80.0, 77.0 | 29.3, 24.3, 15.7 | 80, 80, 80 |
| (a) k = rows | 0.3/0.3, 2.0/0, 3.0/0.3 | 73.3, 76.0, 74.7 | 6.7, 6.7, 4.0 | 77, 75, 77 |
| no correction | 19.3/0.3, 61.0/2.7, 96.3/7.7 | 78.7, 84.3, 82.7 | 51.0, 78.7, 98.0 | 84, 87, 89 |
| **rows, >= 0.99 kept** | 0.3/0.3, 1.3/0, 0.3/0.3 | 70.7, 74.0, 74.3 | 6.7, 4.0, 0.3 | 74, 73, 77 |

(a) rows at or above 0.99 kept, continuously: only the part of P(real) above 0.01 is
multiplied by k; it flags rows just under 0.99 that the shipped fold (bold) corrects.
Keeping rows from block_fake (0.96) instead of 0.99 blocks 2.7% and 7.7% of the 15- and
50-tweet everyday posts. (Measured before on another sample: rows packed up to the model's
length, uncorrected, gave 0.0% and 0.5% false alarms at 5 and 15 tweets, but a claim among
longer true news sentences is diluted below 0.5 by mean-pooling.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import TypeVar

from models.base import MISINFORMATION, Scores

# Tokens after which a sentence ends (when whitespace or the text's end follows).
SENTENCE_END_TOKENS = (".", "!", "?", "…")

# The shortest row the packing starts from: shorter fragments ("Ok.") join a neighbour.
MIN_ROW_TOKENS = 16

# Tokens two neighbouring windows of one long sentence share, as a fraction of a window:
# a phrase cut at one window's edge is seen whole in the next when shorter than that.
OVERLAP_FRACTION = 0.25

# Tasks folded by the row that scores highest on one label (the rest are averaged).
FOLD_BY_MAX: Mapping[str, str] = {MISINFORMATION: "fake"}

# A row at least this sure of its label is not corrected for the number of rows: padding a
# post with harmless sentences never lowers it. Chosen on the shipped model's validation
# data (module docstring): 2 of 21,981 rows of everyday tweets reach it (the highest
# 0.9923), and 77% of the COVID false claims do alone. Check it again after retraining
# (benchmarks/long_posts.py prints both).
SURE_FAKE = 0.99

Span = tuple[int, int]  # [start, end) token indices
_T = TypeVar("_T")


def window_starts(n_tokens: int, body: int, stride: int, max_windows: int) -> list[int]:
    """Start offsets of windows of ``body`` tokens over ``n_tokens``, stepping by ``stride``
    from the head, the last aligned with the end (the tail); over ``max_windows``, the head,
    the tail and evenly spaced windows between."""
    if body < 1 or stride < 1 or max_windows < 1:
        raise ValueError("body, stride and max_windows must be at least 1")
    if n_tokens <= body:
        return [0]
    last = n_tokens - body
    return spread([*range(0, last, stride), last], max_windows)


def spread(items: Sequence[_T], k: int) -> list[_T]:
    """At most ``k`` of ``items``: the first, the last and evenly spaced ones between."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[0]]
    step = (len(items) - 1) / (k - 1)
    return [items[round(i * step)] for i in range(k)]


def sentence_spans(
    ids: Sequence[int], offsets: Sequence[tuple[int, int]], enders: Set[int]
) -> list[Span]:
    """The token spans of the sentences, covering every token: a sentence ends after an
    ender token (``.``, ``!``, ``?``) that whitespace or the end follows, so ``4.5`` and
    ``!!!`` stay whole."""
    spans: list[Span] = []
    start = 0
    for i, token in enumerate(ids):
        last = i + 1 == len(ids)
        if token in enders and (last or offsets[i + 1][0] > offsets[i][1]):
            spans.append((start, i + 1))
            start = i + 1
    if start < len(ids):
        spans.append((start, len(ids)))
    return spans


def pack_spans(spans: Sequence[Span], limit: int) -> list[Span]:
    """Consecutive spans merged while a merged span holds at most ``limit`` tokens."""
    packed: list[Span] = []
    for start, end in spans:
        if packed and end - packed[-1][0] <= limit:
            packed[-1] = (packed[-1][0], end)
        else:
            packed.append((start, end))
    return packed


def plan_rows(n_tokens: int, spans: Sequence[Span], body: int, max_windows: int) -> list[Span]:
    """The token spans to score as rows (see the module docstring). The cap is in
    model-length windows' worth of tokens: rows x longest row <= ``max_windows`` x ``body``,
    so a hundred short sentences cost what 25 full windows cost."""
    if body < 1 or max_windows < 1:
        raise ValueError("body and max_windows must be at least 1")
    if n_tokens <= body:
        return [(0, n_tokens)]
    stride = max(1, body - int(body * OVERLAP_FRACTION))
    limit = min(MIN_ROW_TOKENS, body)
    while True:
        rows = [
            (start + s, min(start + s + body, end))
            for start, end in pack_spans(spans, limit)
            for s in window_starts(end - start, body, stride, max_windows=end - start)
        ]
        longest = max(e - s for s, e in rows)
        if len(rows) * longest <= max_windows * body:
            return rows
        if limit >= body:
            return spread(rows, max(1, max_windows * body // longest))
        limit = min(2 * limit, body)


def split_windows(
    ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    enders: Set[int],
    max_length: int,
    prefix: Sequence[int],
    suffix: Sequence[int],
    max_windows: int,
) -> tuple[tuple[int, ...], ...]:
    """A text's content token ``ids`` (with their character ``offsets``) as rows of at most
    ``max_length`` ids, each wrapped in the special tokens ``prefix`` and ``suffix``
    (``[CLS]`` and ``[SEP]`` for BERT)."""
    body = max_length - len(prefix) - len(suffix)
    if body < 1:
        raise ValueError(f"max_length {max_length} leaves no room between the special tokens")
    spans = sentence_spans(ids, offsets, enders) if len(ids) > body else []
    head, tail = tuple(prefix), tuple(suffix)
    return tuple(
        head + tuple(ids[s:e]) + tail for s, e in plan_rows(len(ids), spans, body, max_windows)
    )


def fold_windows(
    windows: Sequence[Scores],
    by_max: Mapping[str, str] = FOLD_BY_MAX,
    *,
    sure: float = SURE_FAKE,
) -> Scores:
    """One post's result from its windows' scores.

    A task in ``by_max`` takes the distribution of the window where its named label is most
    probable (misinformation: the window with the highest P(fake), so one false claim
    anywhere can flag the post). When that label's probability is below ``sure``, the rest
    of the probability is multiplied by the number of windows (see the module docstring);
    at or above ``sure`` the window is taken as it is, so harmless windows around it never
    lower it. Every other task averages its windows (sentiment).
    """
    if not windows:
        raise ValueError("a post has at least one window")
    if len(windows) == 1:
        return windows[0]
    out: Scores = {}
    for task in windows[0]:
        if task in by_max:
            label = by_max[task]
            most = max((w[task] for w in windows), key=lambda d: d[label])
            out[task] = dict(most) if most[label] >= sure else corrected(most, label, len(windows))
        else:
            out[task] = {
                label: sum(w[task][label] for w in windows) / len(windows)
                for label in windows[0][task]
            }
    return out


def corrected(dist: Mapping[str, float], label: str, k: int) -> dict[str, float]:
    """``dist`` with the probability of every label but ``label`` multiplied by ``k``
    (capped at 1 in all), ``label`` keeping what is left."""
    rest = 1.0 - dist[label]
    scaled = min(1.0, k * rest)
    # The other labels share ``scaled`` in their own proportions. Dividing by their own sum,
    # not by ``rest``: a float32 softmax does not sum to exactly 1, and p / rest gave scores
    # above 1 (1.000000135) once the cap applied.
    others = sum(p for name, p in dist.items() if name != label)
    out = {name: p / others * scaled if others > 0 else 0.0 for name, p in dist.items()}
    out[label] = 1.0 - scaled
    return out
