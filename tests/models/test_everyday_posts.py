"""The shipped model on everyday posts: no false blocks, few false alarms, whatever the style.

The posts are in tests/models/everyday_posts.py, written for these tests. The target of the
shipped model on the validation data is at most 2% labelled fake and 0.5% blocked; on this
small hand-written sample the test allows at most one labelled fake per kind and none
blocked, which a model that keys on style (anger, irony, profanity, links) fails at once.
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


@pytest.mark.parametrize("kind", sorted(EVERYDAY_POSTS))
def test_everyday_posts_are_not_misinformation(predictor: Predictor, kind: str) -> None:
    posts = EVERYDAY_POSTS[kind]
    policy = Policy.from_mapping(dict(predictor.policy))
    scores = predictor.predict(posts)
    p_fake = {post: s["misinformation"]["fake"] for post, s in zip(posts, scores, strict=True)}
    labelled_fake = [post for post, p in p_fake.items() if p >= 0.5]
    blocked = [
        post
        for post, s in zip(posts, scores, strict=True)
        if policy.decide(s["misinformation"]["fake"], s["sentiment"]["negative"]).action
        is Action.BLOCK
    ]
    assert blocked == [], f"{kind}: blocked everyday posts {blocked}"
    assert len(labelled_fake) <= 1, f"{kind}: labelled fake {labelled_fake}"


def test_the_policy_blocks_only_above_even_odds(predictor: Predictor) -> None:
    policy = predictor.policy
    assert 0.5 <= policy["block_fake"] <= 1.0
    assert 0.0 <= policy["review_fake"] <= policy["block_fake"]
