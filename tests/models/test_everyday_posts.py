"""The shipped model on everyday posts: no false blocks, few false alarms, whatever the style.

The posts are in tests/models/everyday_posts.py, written for these tests. The shipped model's
targets on the validation data are at most 2% labelled fake and 0.5% blocked (it measures
1.1% and 0.05% there). On this small hand-written sample it blocks none and labels 4 of 60
fake (all four go to review): short political remarks read like the LIAR statements it
learned from, the known weak spot its model card names. The test holds that line (no block,
at most 10% labelled fake, at most 2 of any kind), which the previous model, blocking nine
everyday posts in ten, failed at once.
"""

from __future__ import annotations

import pytest

from models import DEFAULT_ARTIFACT_DIR
from models.runtime import Predictor, load_predictor
from tests.models.everyday_posts import EVERYDAY_POSTS
from worker.policy import Policy
from worker.schema import Action

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def scored(predictor: Predictor) -> dict[str, list[tuple[str, float, float]]]:
    """Per kind: (post, P(fake), P(negative))."""
    out = {}
    for kind, posts in EVERYDAY_POSTS.items():
        scores = predictor.predict(posts)
        out[kind] = [
            (post, s["misinformation"]["fake"], s["sentiment"]["negative"])
            for post, s in zip(posts, scores, strict=True)
        ]
    return out


@pytest.mark.parametrize("kind", sorted(EVERYDAY_POSTS))
def test_no_everyday_post_is_blocked(
    predictor: Predictor, scored: dict[str, list[tuple[str, float, float]]], kind: str
) -> None:
    policy = Policy.from_mapping(dict(predictor.policy))
    blocked = [
        post for post, fake, neg in scored[kind] if policy.decide(fake, neg).action is Action.BLOCK
    ]
    assert blocked == [], f"{kind}: blocked everyday posts {blocked}"


def test_few_everyday_posts_are_labelled_fake(
    scored: dict[str, list[tuple[str, float, float]]],
) -> None:
    labelled = {kind: [p for p, fake, _ in rows if fake >= 0.5] for kind, rows in scored.items()}
    total = sum(len(rows) for rows in scored.values())
    assert sum(map(len, labelled.values())) <= 0.10 * total, labelled
    assert all(len(posts) <= 2 for posts in labelled.values()), labelled


def test_the_policy_blocks_only_above_even_odds(predictor: Predictor) -> None:
    policy = predictor.policy
    assert 0.5 <= policy["block_fake"] <= 1.0
    assert 0.0 <= policy["review_fake"] <= policy["block_fake"]
