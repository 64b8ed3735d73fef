"""Moderation policy: turn a post's scores into allow / review / block.

Thresholds come with the model artifact (chosen on validation data) and may be overridden
by settings. The rule, in order:

1. ``block``  when P(fake) >= ``block_fake``;
2. ``review`` when P(fake) >= ``review_fake`` or P(negative) >= ``review_negative``;
3. ``allow``  otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.schema import Action


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

    def decide(self, p_fake: float, p_negative: float) -> Action:
        if p_fake >= self.block_fake:
            return Action.BLOCK
        if p_fake >= self.review_fake or p_negative >= self.review_negative:
            return Action.REVIEW
        return Action.ALLOW
