"""The stream mix, weighted thresholds and the per-source moderation report."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from training.data import source_group
from training.finetune import Encoded, epoch_indices
from training.moderation import (
    fake_thresholds,
    misinformation_report,
    misinformation_table,
    stream_weights,
    threshold_for_weighted_precision,
)


def test_source_groups_pool_everyday_posts_and_drop_the_split() -> None:
    assert source_group("tweeteval-irony-train") == "everyday"
    assert source_group("tweeteval-hate-val") == "everyday"
    assert source_group("liar-val") == "liar"
    assert source_group("fakenewsnet-gossipcop") == "fakenewsnet-gossipcop"
    assert source_group("everyday-sentiment") == "everyday-sentiment"


def test_stream_weights_give_everyday_posts_their_share_whatever_the_counts() -> None:
    groups = ["everyday"] * 10 + ["everyday-sentiment"] * 30 + ["liar"] * 5 + ["covid"] * 55
    w = stream_weights(groups, everyday_share=0.9)
    g = np.array(groups)
    assert w.sum() == pytest.approx(1.0)
    assert w[g == "everyday"].sum() == pytest.approx(0.45)
    assert w[g == "everyday-sentiment"].sum() == pytest.approx(0.45)
    assert w[g == "liar"].sum() == pytest.approx(0.05)
    assert w[g == "covid"].sum() == pytest.approx(0.05)
    only_claims = stream_weights(["liar", "covid", "covid"])
    assert only_claims.tolist() == pytest.approx([0.5, 0.25, 0.25])


def test_weighted_precision_threshold_counts_weights_not_posts() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    fake = np.array([1.0, 1.0, 0.0, 1.0])
    even = np.ones(4)
    # Unweighted: down to 0.6 precision is 3/4.
    assert threshold_for_weighted_precision(scores, fake, even, 0.75) == pytest.approx(0.6)
    # The real post at 0.7 weighs as much as everything else: only 0.8 keeps precision 1.
    heavy = np.array([1.0, 1.0, 3.0, 1.0])
    assert threshold_for_weighted_precision(scores, fake, heavy, 0.75) == pytest.approx(0.8)
    assert threshold_for_weighted_precision(scores, np.zeros(4), even, 0.5) == 1.0


def test_tied_scores_are_never_split_by_a_threshold() -> None:
    scores = np.array([0.9, 0.9, 0.5])
    fake = np.array([1.0, 0.0, 1.0])
    # At 0.9 both tied posts are admitted: precision 1/2, never the 1/1 of the first alone.
    assert threshold_for_weighted_precision(scores, fake, np.ones(3), 0.9) == 1.0


def test_block_needs_precision_on_the_stream_and_never_goes_below_even_odds() -> None:
    rng = np.random.default_rng(0)
    everyday = rng.uniform(0.0, 0.6, 900)  # no misinformation, some scored up to 0.6
    claims_fake = rng.uniform(0.4, 1.0, 50)
    claims_real = rng.uniform(0.0, 0.7, 50)
    p = np.concatenate([everyday, claims_fake, claims_real])
    fake = np.concatenate([np.zeros(900), np.ones(50), np.zeros(50)])
    w = stream_weights(["everyday"] * 900 + ["claims"] * 100)
    block, review = fake_thresholds(p, fake, w, 0.95, 0.5)
    assert 0.5 <= review <= block
    blocked = p >= block
    assert (w * fake)[blocked].sum() / w[blocked].sum() >= 0.95
    assert everyday[everyday >= block].size == 0


def test_report_rows_answer_false_alarms_and_claim_quality() -> None:
    sources = ["tweeteval-hate-val"] * 4 + ["liar-val"] * 4
    fake = np.array([0, 0, 0, 0, 1, 1, 0, 0], dtype=np.float64)
    p = np.array([0.1, 0.6, 0.95, 0.2, 0.97, 0.7, 0.3, 0.96])
    report = misinformation_report(sources, fake, p, {"block_fake": 0.9, "review_fake": 0.5})
    hate = report["by_source"]["tweeteval-hate-val"]
    assert hate == {"n": 4, "fake": 0, "labelled_fake": 0.5, "blocked": 0.25, "reviewed": 0.25}
    liar = report["by_source"]["liar-val"]
    assert liar["f1_fake"] == pytest.approx(2 * (2 / 3 * 1.0) / (2 / 3 + 1.0))
    assert liar["precision_at_block"] == pytest.approx(0.5)
    assert liar["recall_at_block"] == pytest.approx(0.5)
    assert liar["auroc"] == pytest.approx(0.75)
    assert report["by_group"]["everyday"]["n"] == 4
    assert report["overall"]["n"] == 8
    # Stream mix: each everyday post weighs 0.9/4, each LIAR post 0.1/4; blocked are one
    # everyday post, one fake and one real LIAR post.
    stream = report["stream"]
    assert stream["precision_at_block"] == pytest.approx(0.025 / (0.225 + 0.025 + 0.025))
    table = "\n".join(misinformation_table(report))
    assert "| tweeteval-hate-val | 4 | 0 | 0.500 | 0.250 | 0.250 | - |" in table


def _encoded(groups: list[str]) -> Encoded:
    return Encoded([[1, 2]] * len(groups), torch.zeros(len(groups), dtype=torch.long), groups)


def test_each_epoch_draws_at_most_the_cap_from_each_source_group() -> None:
    enc = _encoded(["big"] * 100 + ["small"] * 10 + ["mid"] * 30)
    first = epoch_indices(enc, 20, random.Random(1))
    groups = [enc.groups[i] for i in first]
    assert groups.count("big") == 20 and groups.count("mid") == 20 and groups.count("small") == 10
    assert len(set(first)) == len(first)
    second = epoch_indices(enc, 20, random.Random(2))
    assert set(second) != set(first)  # a fresh draw each epoch
    # One source (or no cap): everything, every epoch.
    assert epoch_indices(_encoded(["only"] * 50), 20, random.Random(1)) == list(range(50))
    assert len(epoch_indices(enc, None, random.Random(1))) == 140


def test_balanced_epochs_draw_every_source_group_up_to_the_cap() -> None:
    enc = _encoded(["big"] * 100 + ["small"] * 10 + ["mid"] * 30)
    order = epoch_indices(enc, 20, random.Random(1), balance=True)
    groups = [enc.groups[i] for i in order]
    assert groups.count("big") == groups.count("mid") == groups.count("small") == 20
    small = [i for i in order if enc.groups[i] == "small"]
    assert set(small) == set(range(100, 110))  # every small example, then repeats
    assert len({i for i in order if enc.groups[i] == "mid"}) == 20  # larger: no repeats
