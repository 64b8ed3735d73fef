"""Shadow comparison: score every post with a candidate model too, in the same pass.

:class:`ShadowPipeline` is the live :class:`~worker.pipeline.Pipeline` (its verdicts are
what the replay writes) plus the candidate model and its policy; for each post it records
a :class:`Comparison` (ids, both actions, both scores) in a :class:`ShadowLog`, a JSON Lines
file next to the replay's resume file, so a resumed replay keeps what was compared before.
The candidate reuses the live tokenisation when both models tokenise alike (one
``prepare``), else it tokenises on its own.

The candidate is only being evaluated: when it fails on a batch, or gives a score that is
not a finite probability, the posts are logged as :class:`CandidateError` (counted in the
report) and the live verdicts are returned unchanged, never a dead letter.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from models.base import MISINFORMATION, SENTIMENT, Classifier, Encoded, Scores
from worker.hotswap import score_problem
from worker.pipeline import Pipeline, ResultCountError
from worker.policy import Policy
from worker.schema import Post, Verdict

log = logging.getLogger(__name__)

# Tokenisation probes: two models that encode these alike share a tokenizer and max_length.
_PROBES = (
    "Drinking hot water cures COVID-19 in 24 hours, doctors don't want you to know!",
    "The council meets on Tuesday. " * 60,
    "naïve café 😀 @friend http://example.com/x #tag",
)


def same_tokenisation(a: Classifier, b: Classifier) -> bool:
    return a.max_length == b.max_length and a.prepare(list(_PROBES)) == b.prepare(list(_PROBES))


@dataclass(frozen=True, slots=True)
class Comparison:
    """One post scored by both models. ``text`` only when MODSTREAM_STORE_TEXT allows it."""

    post_id: str
    partition: int
    offset: int
    live_action: str
    candidate_action: str
    live_fake: float
    candidate_fake: float
    live_negative: float
    candidate_negative: float
    text: str | None = None

    @property
    def flipped(self) -> bool:
        return self.live_action != self.candidate_action

    @property
    def score_change(self) -> float:
        """The larger change of the two scores the policy reads."""
        return max(
            abs(self.candidate_fake - self.live_fake),
            abs(self.candidate_negative - self.live_negative),
        )


@dataclass(frozen=True, slots=True)
class CandidateError:
    """One post the candidate gave no usable score for (it raised, returned the wrong number
    of results, or a score that is not a finite probability): the live verdict stands."""

    post_id: str
    partition: int
    offset: int
    live_action: str
    candidate_error: str


ShadowEntry = Comparison | CandidateError


class ShadowLog:
    """Comparisons and candidate errors appended to a JSON Lines file (from the model thread),
    read back de-duplicated by record: a post redone after a kill counts once, with its last
    scores. Lines of an older log hold only comparisons, read alike."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, entries: Sequence[ShadowEntry]) -> None:
        lines = "".join(json.dumps(asdict(e)) + "\n" for e in entries)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(lines)

    def read(self) -> list[ShadowEntry]:
        latest: dict[tuple[int, int], ShadowEntry] = {}
        for entry in self._lines():
            latest[(entry.partition, entry.offset)] = entry
        return [latest[k] for k in sorted(latest)]

    def _lines(self) -> Iterator[ShadowEntry]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    fields = json.loads(line)
                    kind = CandidateError if "candidate_error" in fields else Comparison
                    yield kind(**fields)
                except (ValueError, TypeError):
                    continue  # a line cut short by a kill


class ShadowPipeline(Pipeline):
    """The live pipeline, plus the candidate model scored on the same batch."""

    def __init__(
        self,
        model: Classifier,
        policy: Policy,
        pseudonymise: Callable[[str | None], str | None],
        *,
        candidate: Classifier,
        candidate_policy: Policy,
        shadow_log: ShadowLog,
        store_text: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        replay_id: str | None = None,
    ) -> None:
        super().__init__(
            model, policy, pseudonymise, store_text=store_text, clock=clock, replay_id=replay_id
        )
        self.candidate = candidate
        self._candidate_policy = candidate_policy
        self._log = shadow_log
        self._keep_text = store_text
        self.shared_tokens = same_tokenisation(model, candidate)

    def classify(
        self, posts: Sequence[Post], encoded: Sequence[Encoded] | None = None
    ) -> list[Verdict]:
        if not posts:
            return []
        if encoded is None:
            encoded = self.model.prepare([p.event.text for p in posts])
        verdicts = super().classify(posts, encoded)
        self._log.append(self._shadow(posts, encoded, verdicts))
        return verdicts

    def _shadow(
        self, posts: Sequence[Post], encoded: Sequence[Encoded], verdicts: Sequence[Verdict]
    ) -> list[ShadowEntry]:
        """The candidate's entry for each post. Never raises for the candidate: it is only
        being evaluated, so its failure is logged (once per batch) and counted, and the
        live verdicts stand."""
        try:
            scores = self._candidate_scores(posts, encoded)
        except Exception as exc:  # noqa: BLE001 - a candidate fails in any way; counted
            why = f"{type(exc).__name__}: {exc}"[:200]  # repeated on each post's line
            self._warn(f"failed on a batch ({why})", len(posts), len(posts))
            return [self._error(p, v, why) for p, v in zip(posts, verdicts, strict=True)]
        entries = [self._entry(p, v, s) for p, v, s in zip(posts, verdicts, scores, strict=True)]
        errors = [e for e in entries if isinstance(e, CandidateError)]
        if errors:
            self._warn(
                f"gave unusable scores ({errors[0].candidate_error})", len(errors), len(posts)
            )
        return entries

    def _candidate_scores(self, posts: Sequence[Post], encoded: Sequence[Encoded]) -> list[Scores]:
        if self.shared_tokens:
            scores = self.candidate.predict_encoded(encoded)
        else:
            scores = self.candidate.predict([p.event.text for p in posts])
        if len(scores) != len(posts):
            raise ResultCountError(
                f"candidate returned {len(scores)} results for {len(posts)} posts"
            )
        return scores

    def _warn(self, what: str, errors: int, posts: int) -> None:
        log.warning(
            "shadow candidate %s %s: %d of %d posts have no candidate score; "
            "the live verdicts stand",
            self.candidate.version,
            what,
            errors,
            posts,
        )

    def _entry(self, post: Post, verdict: Verdict, scores: Scores) -> ShadowEntry:
        problem = score_problem(scores)
        if problem is not None:
            return self._error(post, verdict, problem)
        return self._compare(post, verdict, scores)

    @staticmethod
    def _error(post: Post, verdict: Verdict, why: str) -> CandidateError:
        return CandidateError(
            post_id=post.event.post_id,
            partition=post.source.partition,
            offset=post.source.offset,
            live_action=verdict.action.value,
            candidate_error=why,
        )

    def _compare(self, post: Post, verdict: Verdict, scores: Scores) -> Comparison:
        fake = scores[MISINFORMATION]["fake"]
        negative = scores[SENTIMENT]["negative"]
        decision = self._candidate_policy.decide(p_fake=fake, p_negative=negative)
        return Comparison(
            post_id=post.event.post_id,
            partition=post.source.partition,
            offset=post.source.offset,
            live_action=verdict.action.value,
            candidate_action=decision.action.value,
            live_fake=verdict.misinformation.score,
            candidate_fake=fake,
            live_negative=verdict.sentiment.scores["negative"],
            candidate_negative=negative,
            text=post.event.text if self._keep_text else None,
        )
