"""Moderation policy: turn a post's scores into allow / review / block.

Thresholds come with the model artifact (chosen on validation data) and may be overridden
by settings. The rule, in order:

1. ``block``  when P(fake) >= ``block_fake``;
2. ``review`` when P(fake) >= ``review_fake`` or P(negative) >= ``review_negative``;
3. ``allow``  otherwise.

Every decision carries its ``reasons``: the rules that decided it, each with the score and
the threshold (``fake_score=0.9712>=block_fake=0.9300``), so a moderator and an auditor see
why. An ``allow`` lists the rules that did not fire (``fake_score=0.0310<review_fake=...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from worker.schema import Action


class Decision(NamedTuple):
    action: Action
    reasons: tuple[str, ...]


def _rule(score_name: str, score: float, threshold_name: str, threshold: float) -> str:
    op = ">=" if score >= threshold else "<"
    return f"{score_name}={score:.4f}{op}{threshold_name}={threshold:.4f}"


@dataclass(frozen=True, slots=True)
class Policy:
    block_fake: float = 0.9
    review_fake: float = 0.5
    review_negative: float = 0.8

    def __post_init__(self) -> None:
        for name in ("block_fake", "review_fake", "review_negative"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"policy threshold {name} must be within [0, 1], got {value}")
        if self.review_fake > self.block_fake:
            raise ValueError("policy: review_fake must not exceed block_fake")

    @classmethod
    def from_mapping(cls, values: dict[str, Any], **overrides: float | None) -> Policy:
        """Thresholds from an artifact's config, with non-None ``overrides`` on top."""
        merged = {k: float(v) for k, v in values.items() if k in cls.__dataclass_fields__}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**merged)

    def decide(self, p_fake: float, p_negative: float) -> Decision:
        if p_fake >= self.block_fake:
            return Decision(
                Action.BLOCK, (_rule("fake_score", p_fake, "block_fake", self.block_fake),)
            )
        fake = _rule("fake_score", p_fake, "review_fake", self.review_fake)
        negative = _rule("negative_score", p_negative, "review_negative", self.review_negative)
        fired = tuple(
            reason
            for reason, hit in (
                (fake, p_fake >= self.review_fake),
                (negative, p_negative >= self.review_negative),
            )
            if hit
        )
        if fired:
            return Decision(Action.REVIEW, fired)
        return Decision(Action.ALLOW, (fake, negative))
