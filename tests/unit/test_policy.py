import pytest

from worker.policy import Policy
from worker.schema import Action


@pytest.mark.parametrize(
    ("p_fake", "p_neg", "action"),
    [
        (0.95, 0.0, Action.BLOCK),
        (0.90, 0.0, Action.BLOCK),
        (0.89, 0.0, Action.REVIEW),
        (0.50, 0.0, Action.REVIEW),
        (0.10, 0.85, Action.REVIEW),
        (0.10, 0.10, Action.ALLOW),
        (0.95, 0.99, Action.BLOCK),
    ],
)
def test_decide(p_fake: float, p_neg: float, action: Action) -> None:
    decision = Policy(block_fake=0.9, review_fake=0.5, review_negative=0.8).decide(p_fake, p_neg)
    assert decision.action is action
    assert decision.reasons  # every decision says why


def test_reasons_name_the_rules_scores_and_thresholds_that_decided() -> None:
    policy = Policy(block_fake=0.93, review_fake=0.4, review_negative=0.8)
    assert policy.decide(0.97123, 0.99).reasons == ("fake_score=0.9712>=block_fake=0.9300",)
    assert policy.decide(0.5, 0.85).reasons == (
        "fake_score=0.5000>=review_fake=0.4000",
        "negative_score=0.8500>=review_negative=0.8000",
    )
    assert policy.decide(0.1, 0.85).reasons == ("negative_score=0.8500>=review_negative=0.8000",)
    assert policy.decide(0.1, 0.2).reasons == (
        "fake_score=0.1000<review_fake=0.4000",
        "negative_score=0.2000<review_negative=0.8000",
    )


def test_overrides_win_over_artifact_values() -> None:
    policy = Policy.from_mapping(
        {"block_fake": 0.7, "review_fake": 0.4, "unknown": 3}, block_fake=0.99, review_negative=None
    )
    assert (policy.block_fake, policy.review_fake, policy.review_negative) == (0.99, 0.4, 0.8)


@pytest.mark.parametrize("kwargs", [{"block_fake": 1.5}, {"review_fake": 0.95, "block_fake": 0.9}])
def test_bad_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Policy(**kwargs)
