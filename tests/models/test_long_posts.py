"""Long posts are scored in full: padding a false claim with harmless text does not hide it."""

from __future__ import annotations

import pytest

from models import DEFAULT_ARTIFACT_DIR
from models.base import MISINFORMATION, Scores
from models.runtime import Predictor, load_predictor

pytestmark = pytest.mark.model

LENGTH = 10_000
# A claim the misinformation head flags on its own (checked below, so a retrained model
# that does not is reported as such, not as a windowing failure).
CLAIM = "Drinking bleach cures COVID-19."
# Ordinary, true, public-health-update sentences (the domain the head knows), repeated.
UPDATES = (
    "The state reported 1,204 new cases and 12 deaths today, according to the health "
    "department's daily update.",
    "Testing sites will be open from 8am to 4pm this weekend; bring your ID and wear a mask.",
)


def harmless(length: int) -> str:
    """Whole sentences of harmless text, at most ``length`` characters."""
    text, i = "", 0
    while len(text) + len(UPDATES[i % 2]) + 1 <= length:
        text, i = f"{text} {UPDATES[i % 2]}".strip(), i + 1
    return text


def is_fake(scores: Scores) -> bool:
    return scores[MISINFORMATION]["fake"] >= 0.5


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", precision="fp32")


def test_a_false_claim_in_the_last_sentence_of_a_long_post_is_caught(
    predictor: Predictor,
) -> None:
    padding = harmless(LENGTH - len(CLAIM) - 1)
    post = f"{padding} {CLAIM}"
    assert LENGTH - 200 < len(post) <= LENGTH
    [enc] = predictor.prepare([post])
    assert enc.rows > 1  # far beyond one window of the model's length
    alone, long_post = predictor.predict([CLAIM, post])
    assert is_fake(alone), "the model does not flag the claim alone: pick another CLAIM"
    assert is_fake(long_post) == is_fake(alone)


def test_the_claim_is_caught_wherever_it_sits(predictor: Predictor) -> None:
    half = harmless(LENGTH // 2)
    posts = [f"{CLAIM} {half} {half}", f"{half} {CLAIM} {half}"]
    assert all(is_fake(s) for s in predictor.predict(posts))


def test_long_posts_cost_what_their_tokens_cost(predictor: Predictor) -> None:
    [enc] = predictor.prepare([harmless(60_000)])  # near the 64 KiB record limit
    assert enc.rows * enc.tokens <= predictor.max_windows * predictor.max_length
    assert enc.tokens <= predictor.max_length


def test_long_everyday_posts_are_not_labelled_fake_for_having_many_sentences(
    predictor: Predictor,
) -> None:
    """Each row is another chance of a false alarm; the fold corrects for the count."""
    from tests.models.everyday_posts import EVERYDAY_POSTS

    texts = [text for kind in EVERYDAY_POSTS.values() for text in kind]
    long_posts = [" ".join(texts[i : i + 15]) for i in range(0, len(texts), 15)]
    long_posts += [" ".join(texts[i : i + 30]) for i in range(0, len(texts), 30)]
    assert all(predictor.prepare([p])[0].rows > 1 for p in long_posts)
    scored = zip(long_posts, predictor.predict(long_posts), strict=True)
    flagged = [p[:80] for p, s in scored if is_fake(s)]
    assert flagged == []
