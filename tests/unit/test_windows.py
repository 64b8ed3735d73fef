"""Long posts as windows: where they start, what they hold, and how their scores fold."""

from __future__ import annotations

import re

import pytest

from models.base import Encoded
from models.windows import (
    SURE_FAKE,
    Span,
    corrected,
    fold_windows,
    pack_spans,
    plan_rows,
    sentence_spans,
    split_windows,
    spread,
    window_starts,
)

CLS, SEP = (101,), (102,)
ENDERS = frozenset({1, 2, 3})  # ".", "!", "?"
_MARKS = {".": 1, "!": 2, "?": 3}


def tokenise(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """A toy tokenizer: words and punctuation marks, with character offsets."""
    ids, offsets = [], []
    for m in re.finditer(r"\w+|[^\w\s]", text):
        ids.append(_MARKS.get(m.group(), 1000 + len(m.group())))
        offsets.append(m.span())
    return ids, offsets


def windows(text: str, max_length: int, max_windows: int) -> tuple[tuple[int, ...], ...]:
    ids, offsets = tokenise(text)
    return split_windows(ids, offsets, ENDERS, max_length, CLS, SEP, max_windows)


def scores(p_fake: float, negative: float) -> dict[str, dict[str, float]]:
    rest = (1.0 - negative) / 2
    return {
        "sentiment": {"negative": negative, "neutral": rest, "positive": rest},
        "misinformation": {"real": 1.0 - p_fake, "fake": p_fake},
    }


def sentence(n_words: int, end: str = ".") -> str:
    return " ".join(["word"] * n_words) + end


def test_a_short_text_is_one_window_wrapped_in_special_tokens() -> None:
    ids, offsets = tokenise("Hi there. Ok!")
    assert split_windows(ids, offsets, ENDERS, 8, CLS, SEP, 4) == ((101, *ids, 102),)
    assert split_windows([], [], ENDERS, 8, CLS, SEP, 4) == ((101, 102),)


def test_a_text_of_exactly_the_body_length_is_not_split() -> None:
    assert len(windows(sentence(5), 8, 4)) == 1  # 5 words + "." = 6 = 8 - 2 special tokens


def test_sentences_end_at_a_mark_followed_by_space_or_the_end() -> None:
    text = "It costs 4.5 million!!! Really? yes and no"
    ids, offsets = tokenise(text)
    spans = sentence_spans(ids, offsets, ENDERS)
    pieces = [text[offsets[s][0] : offsets[e - 1][1]] for s, e in spans]
    assert pieces == ["It costs 4.5 million!!!", "Really?", "yes and no"]


def test_packing_merges_neighbours_up_to_the_limit() -> None:
    spans = [(0, 5), (5, 8), (8, 20), (20, 22), (22, 24)]
    assert pack_spans(spans, 8) == [(0, 8), (8, 20), (20, 24)]
    assert pack_spans(spans, 100) == [(0, 24)]


def test_each_sentence_is_its_own_row_when_the_cap_allows() -> None:
    text = " ".join(sentence(20) for _ in range(10)) + " The claim is here."
    rows = windows(text, 64, max_windows=100)
    assert len(rows) == 11
    assert rows[-1][1:-1] == tuple(tokenise("The claim is here.")[0])  # scored alone
    assert all(r[0] == 101 and r[-1] == 102 for r in rows)


def test_tiny_fragments_join_a_neighbour() -> None:
    text = " ".join(sentence(20) for _ in range(4)) + " Ok. " + sentence(6)
    rows = windows(text, 64, max_windows=100)
    assert len(rows) == 5 and len(rows[-1]) == 2 + 2 + 7  # "Ok." joins the last sentence


def test_the_cap_counts_tokens_so_many_short_sentences_stay_alone() -> None:
    text = " ".join(sentence(9) for _ in range(40))  # 400 tokens, 40 sentences of 10
    rows = windows(text, 66, max_windows=7)  # body 64: 7 x 64 = 448 token slots
    assert len(rows) == 40


def test_under_a_tight_cap_sentences_pack_into_longer_rows_covering_everything() -> None:
    text = sentence(59) + " " + " ".join(sentence(4) for _ in range(40))  # 60 + 40 x 5 tokens
    ids, _ = tokenise(text)
    rows = windows(text, 66, max_windows=6)  # 41 rows padded to 60 would cost 2460 > 384
    assert len(rows) == 5  # the long sentence, then twelve short ones a row
    assert sum(len(r) - 2 for r in rows) == len(ids)  # every token once, nothing skipped
    assert all(len(r) <= 66 for r in rows)


def test_over_the_cap_head_tail_and_evenly_spaced_rows_are_kept() -> None:
    ids, offsets = tokenise(" ".join(sentence(9) for _ in range(100)))  # 1000 tokens
    spans = sentence_spans(ids, offsets, ENDERS)
    rows = plan_rows(len(ids), spans, body=20, max_windows=5)  # 50 rows of 20 at the least
    assert rows == [(i * 20, i * 20 + 20) for i in (0, 12, 24, 37, 49)]  # head, tail, spread


def test_a_sentence_longer_than_the_model_becomes_overlapping_windows() -> None:
    text = sentence(99, end="")  # 99 tokens, no sentence end
    rows = windows(text, 18, max_windows=100)  # body 16, stride 12
    bodies = [r[1:-1] for r in rows]
    assert all(len(b) == 16 for b in bodies)
    assert window_starts(99, body=16, stride=12, max_windows=100)[-1] == 83  # the tail
    assert len(rows) == len(window_starts(99, body=16, stride=12, max_windows=100))


def test_window_starts_step_by_the_stride_and_end_on_the_tail() -> None:
    assert window_starts(10, body=4, stride=3, max_windows=10) == [0, 3, 6]
    assert window_starts(11, body=4, stride=3, max_windows=10) == [0, 3, 6, 7]
    assert window_starts(4, body=4, stride=3, max_windows=10) == [0]


def test_spread_keeps_first_last_and_even_steps() -> None:
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread(list(range(10)), 1) == [0]
    assert spread([1, 2], 5) == [1, 2]


def test_a_cap_of_one_row_keeps_the_head() -> None:
    text = " ".join(sentence(9) for _ in range(10))
    [row] = windows(text, 22, max_windows=1)
    assert row[1:-1] == tuple(tokenise(text)[0][:20])  # as many whole sentences as fit


@pytest.mark.parametrize(("max_length", "max_windows"), [(2, 4), (8, 0)])
def test_impossible_window_settings_are_refused(max_length: int, max_windows: int) -> None:
    with pytest.raises(ValueError):
        windows(sentence(30), max_length, max_windows)


def test_encoded_counts_rows_and_longest_window() -> None:
    long = Encoded(windows(" ".join(sentence(7) for _ in range(5)), 10, max_windows=8))
    short = Encoded(windows("a b", 10, max_windows=8))
    assert short.rows == 1 and short.tokens == 4
    assert long.rows == len(long.windows) == 5 and long.tokens == 10


def fold(rows: list[dict[str, dict[str, float]]]) -> float:
    return fold_windows(rows)["misinformation"]["fake"]


def test_fold_takes_the_most_fake_window_corrected_for_the_count_and_averages_sentiment() -> None:
    folded = fold_windows([scores(0.1, 0.2), scores(0.96, 0.4), scores(0.3, 0.6)])
    # P(real) of the most-fake window times 3 windows
    assert folded["misinformation"] == {"real": pytest.approx(0.12), "fake": pytest.approx(0.88)}
    assert folded["sentiment"]["negative"] == pytest.approx(0.4)
    assert sum(folded["sentiment"].values()) == pytest.approx(1.0)


def test_a_sure_false_claim_among_many_harmless_windows_still_flags_the_post() -> None:
    rows = [scores(0.02, 0.1)] * 40 + [scores(0.999, 0.1)]
    assert fold_windows(rows)["misinformation"] == scores(0.999, 0.1)["misinformation"]


def content_rows(n_tokens: int, sentence_tokens: int) -> list[Span]:
    """The rows :func:`plan_rows` cuts a post of sentences of ``sentence_tokens`` into, with
    the shipped model's window (126 tokens between [CLS] and [SEP]) and cap (64)."""
    spans = [(i, min(i + sentence_tokens, n_tokens)) for i in range(0, n_tokens, sentence_tokens)]
    return plan_rows(n_tokens, spans, body=126, max_windows=64)


def claim_among_harmless(n_tokens: int, sentence_tokens: int, claim: float, at: int = 0) -> float:
    """P(fake) of such a post whose row ``at`` scores ``claim``, every other row 0.05."""
    rows = [scores(0.05, 0.1)] * len(content_rows(n_tokens, sentence_tokens))
    rows[at % len(rows)] = scores(claim, 0.1)
    return fold(rows)


@pytest.mark.parametrize("n_tokens", [127, 300, 600, 1_200, 4_000, 20_000])
@pytest.mark.parametrize("sentence_tokens", [6, 12, 14, 40, 200])
@pytest.mark.parametrize("claim", [SURE_FAKE, 0.995, 0.999, 1.0])
def test_padding_with_harmless_sentences_never_lowers_a_sure_claim(
    n_tokens: int, sentence_tokens: int, claim: float
) -> None:
    # The old fold multiplied P(real) by the rows whatever it was: 600 tokens of 12-token
    # sentences are 50 rows, and a claim at 0.99 fell to 0.5 (allowed); 1,200 tokens to 0.
    for at in (0, 7, -1):
        assert claim_among_harmless(n_tokens, sentence_tokens, claim, at) == claim


def test_the_reviewers_posts_keep_a_claim_at_099_blocked() -> None:
    block = 0.959813  # the shipped policy's block_fake
    assert [len(content_rows(n, 12)) for n in (600, 1_200)] == [50, 100]
    assert len(content_rows(126, 14)) == 1 and len(content_rows(127, 14)) == 9
    for n_tokens, sentence_tokens in ((126, 14), (127, 14), (600, 12), (1_200, 12)):
        assert claim_among_harmless(n_tokens, sentence_tokens, 0.99) >= block


def test_a_post_one_token_past_a_window_does_not_fall_off_a_cliff_when_sure() -> None:
    one_window, nine_rows = (claim_among_harmless(n, 14, 0.995) for n in (126, 127))
    assert one_window == nine_rows == 0.995  # the old fold: 0.995, then 0.955 (not blocked)


def test_below_the_sure_level_the_most_fake_row_is_still_corrected_for_the_rows() -> None:
    # What keeps false alarms down: a sentence cut out of its context often reads like a
    # headline, and every row is another chance of one.
    assert claim_among_harmless(600, 12, 0.98) == pytest.approx(0.0)  # 50 rows x 0.02
    assert claim_among_harmless(127, 14, 0.98) == pytest.approx(1 - 9 * 0.02)
    assert fold([scores(0.05, 0.1), scores(0.9899, 0.1)]) == pytest.approx(1 - 2 * 0.0101)


def test_the_fold_never_falls_as_the_most_fake_row_rises() -> None:
    for n_rows in (2, 9, 50, 100, 500):
        folded = [
            fold([scores(0.05, 0.1)] * (n_rows - 1) + [scores(p / 1000, 0.1)])
            for p in range(0, 1001)
        ]
        assert folded == sorted(folded)
        assert folded[-11] == pytest.approx(0.99)  # SURE_FAKE kept from there on


def test_many_windows_each_a_little_fake_do_not_add_up_to_a_fake_post() -> None:
    rows = [scores(0.9, 0.1)] * 20  # each window alone would be labelled fake
    assert fold_windows(rows)["misinformation"] == {"real": 1.0, "fake": 0.0}


def test_the_correction_keeps_a_distribution() -> None:
    dist = {"a": 0.7, "b": 0.2, "c": 0.1}
    out = corrected(dist, "a", 2)
    assert out == {"a": pytest.approx(0.4), "b": pytest.approx(0.4), "c": pytest.approx(0.2)}
    assert corrected({"a": 1.0, "b": 0.0}, "a", 5) == {"a": 1.0, "b": 0.0}


def test_the_capped_correction_of_a_float32_softmax_stays_a_probability() -> None:
    # A float32 softmax's pair does not sum to exactly 1; capped at 1, the other label must
    # read 1.0, not p / (1 - P(fake)) = 1.0000004.
    dist = {"real": 0.25 + 1e-7, "fake": 0.75}
    assert corrected(dist, "fake", 8) == {"real": 1.0, "fake": 0.0}
    out = corrected({"a": 0.6, "b": 0.3000001, "c": 0.1}, "a", 5)
    assert all(0.0 <= v <= 1.0 for v in out.values()) and sum(out.values()) == pytest.approx(1.0)


def test_fold_of_one_window_is_that_window() -> None:
    only = scores(0.3, 0.3)
    assert fold_windows([only]) == only
    assert fold_windows([scores(0.9, 0.3)]) == scores(0.9, 0.3)  # never corrected


def test_fold_refuses_a_post_without_windows() -> None:
    with pytest.raises(ValueError):
        fold_windows([])
