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
    assert (
        Policy(block_fake=0.9, review_fake=0.5, review_negative=0.8).decide(p_fake, p_neg) is action
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
