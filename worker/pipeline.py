"""Model + policy: a batch of posts in, exactly one verdict per post out."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from models.base import MISINFORMATION, SENTIMENT, Classifier, Encoded, Scores
from worker.hotswap import SwapSlot
from worker.policy import Policy
from worker.schema import MisinformationResult, Post, SentimentResult, Verdict


class ResultCountError(RuntimeError):
    """The model returned a different number of results than it was given texts."""


class NonFiniteScoreError(RuntimeError):
    """The model returned NaN or infinity: a model failure, never a verdict (a NaN P(fake)
    would pass every threshold test as false and allow the post)."""


class Pipeline:
    def __init__(
        self,
        model: Classifier,
        policy: Policy,
        pseudonymise: Callable[[str | None], str | None],
        *,
        store_text: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        replay_id: str | None = None,
    ) -> None:
        self.model = model
        self.replay_id = replay_id  # set on every verdict of a replay
        self.policy = policy
        self._pseudonymise = pseudonymise
        self._store_text = store_text
        self._clock = clock
        self.swap = SwapSlot()  # where a hot-swap hands over a new model (worker.hotswap)

    def swap_waiting(self) -> bool:
        return self.swap.waiting()

    def apply_swap(self) -> bool:
        """Serve the model a hot-swap offered, with its policy, if one waits: the one place
        they change. The model stage calls it between two batches, on its own thread."""
        candidate = self.swap.take()
        if candidate is None:
            return False
        self.model, self.policy = candidate.model, candidate.policy
        return True

    def classify(
        self, posts: Sequence[Post], encoded: Sequence[Encoded] | None = None
    ) -> list[Verdict]:
        """Run one forward pass over the batch and decide each post. ``encoded``: the posts
        already tokenised (by the tokenise stage); else they are tokenised here."""
        if not posts:
            return []
        model, policy = self.model, self.policy  # a swap never runs while a batch is scored
        if encoded is None:
            encoded = model.prepare([p.event.text for p in posts])
        scores = model.predict_encoded(encoded)
        if len(scores) != len(posts):
            raise ResultCountError(f"model returned {len(scores)} results for {len(posts)} posts")
        for post, s in zip(posts, scores, strict=True):
            if not all(math.isfinite(p) for dist in s.values() for p in dist.values()):
                raise NonFiniteScoreError(f"model returned {s} for post {post.event.post_id}")
        now = self._clock()
        return [
            self._verdict(post, s, now, model.version, policy)
            for post, s in zip(posts, scores, strict=True)
        ]

    def _verdict(
        self, post: Post, scores: Scores, now: datetime, version: str, policy: Policy
    ) -> Verdict:
        sentiment = scores[SENTIMENT]
        misinfo = scores[MISINFORMATION]
        p_fake = misinfo["fake"]
        decision = policy.decide(p_fake=p_fake, p_negative=sentiment["negative"])
        return Verdict(
            post_id=post.event.post_id,
            action=decision.action,
            reasons=list(decision.reasons),
            sentiment=SentimentResult(
                label=max(sentiment, key=sentiment.__getitem__), scores=sentiment
            ),
            misinformation=MisinformationResult(
                label="fake" if p_fake >= 0.5 else "real", score=p_fake
            ),
            model_version=version,
            event_time=post.event_time,
            processed_at=now,
            author_pseudonym=self._pseudonymise(post.event.author_id),
            lang=post.event.lang,
            text=post.event.text if self._store_text else None,
            source_topic=post.source.topic,
            source_partition=post.source.partition,
            source_offset=post.source.offset,
            replay_id=self.replay_id,
        )
