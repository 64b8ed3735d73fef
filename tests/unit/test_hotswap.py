"""Model hot-swap: the switch point between batches, refusal of a broken artifact, the
policy switching with the model, and the watcher seeing a symlink flip. Stages run inline
(deterministic); one threaded run streams posts through a swap."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from models.base import Classifier, Encoded, Scores
from tests.fakes import FakeModel, ManualClock, record
from tests.unit.test_stages_threaded import Threaded, wait_until
from worker.batcher import BatchLimits, MicroBatcher, Size
from worker.checkpoint import Partition
from worker.flow import Board, Channel, Generations, Item, Prepared, Ref, WriteJob
from worker.hotswap import (
    Candidate,
    ModelReloader,
    Refused,
    SwapSlot,
    fingerprint,
    load_candidate,
    probe,
)
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.schema import Action, Post, SourceRef, Verdict, decode
from worker.stages import ModelStage, TokenizeStage


def swaps(result: str) -> float:
    return REGISTRY.get_sample_value("modstream_model_swaps_total", {"result": result}) or 0.0


def candidate(model: FakeModel, policy: Policy | None = None) -> Candidate:
    return Candidate(model, policy or Policy(), Path("/models") / model.version, 0.0)


class Stages:
    """The tokenise and model stages of one worker, driven by hand."""

    def __init__(self, model: FakeModel) -> None:
        self.clock = ManualClock()
        board = Board()
        self.inbox: Channel[list[Item]] = Channel(board)
        self.to_model: Channel[list[Prepared]] = Channel(board, capacity=1)
        self.to_writer: Channel[WriteJob] = Channel(board)
        self.generations = Generations()
        self.pipeline = Pipeline(model, Policy(), Pseudonymiser(b"k"))
        batcher: MicroBatcher[Prepared] = MicroBatcher(
            BatchLimits(8, 0.05, 10_000), lambda p: Size(p.encoded.rows, p.encoded.tokens)
        )
        self.tokenize = TokenizeStage(
            lambda: self.pipeline.model,
            batcher,
            self.inbox,
            self.to_model,
            self.to_writer,
            self.generations,
            lambda: True,
        )
        self.model = ModelStage(
            self.pipeline, board, self.to_model, self.to_writer, self.generations
        )
        self.offset = 0

    def feed(self, *texts: str) -> None:
        items = []
        for text in texts:
            rec = record(self.offset, {"post_id": f"p{self.offset}", "text": text})
            post = decode(
                rec.key, rec.value, SourceRef("posts", 0, self.offset), max_event_bytes=10**6
            )
            assert isinstance(post, Post)
            items.append(Item(post, rec, Ref(post.source, 0, self.clock())))
            self.offset += 1
        self.inbox.put(items)

    def verdicts(self) -> list[Verdict]:
        return [
            v for job in self.to_writer.take_all() for _, v in job.entries if isinstance(v, Verdict)
        ]


def test_a_batch_tokenised_by_the_old_model_is_tokenised_again_by_the_new_one() -> None:
    old, new = FakeModel(version="v1"), FakeModel(version="v2", first_id=1000)
    rig = Stages(old)
    rig.feed("fake news here", "hello there")
    assert rig.tokenize.work()  # tokenised by v1, and the batch handed to the model
    assert len(rig.to_model) == 1
    rig.pipeline.swap.offer(candidate(new))

    assert rig.model.work()  # the swap, then the batch
    verdicts = rig.verdicts()
    assert [v.model_version for v in verdicts] == ["v2", "v2"]
    assert old.calls == []  # v1 scored nothing after the swap
    assert new.prepared == [2]  # v2 tokenised the batch again: v1's ids mean nothing to it
    assert [v.action for v in verdicts] == [Action.BLOCK, Action.ALLOW]


def test_posts_tokenised_after_the_swap_use_the_new_model_once() -> None:
    old, new = FakeModel(version="v1"), FakeModel(version="v2", first_id=1000)
    rig = Stages(old)
    rig.feed("hello")
    rig.tokenize.work()
    rig.model.work()
    assert [v.model_version for v in rig.verdicts()] == ["v1"]

    rig.pipeline.swap.offer(candidate(new))
    assert rig.model.has_work()  # a waiting swap wakes the idle model stage
    assert rig.model.work()  # applied with no batch in hand
    assert rig.pipeline.model is new
    rig.feed("fake claim", "fine day")
    rig.tokenize.work()
    rig.model.work()
    verdicts = rig.verdicts()
    assert [(v.model_version, v.action) for v in verdicts] == [
        ("v2", Action.BLOCK),
        ("v2", Action.ALLOW),
    ]
    assert old.prepared == [1] and new.prepared == [2]  # no second tokenisation
    assert new.calls == [2]


def test_a_swap_waits_until_no_replica_is_scoring() -> None:
    old, new = FakeModel(version="v1"), FakeModel(version="v2", first_id=1000)
    rig = Stages(old)
    rig.model.crew.replicas = 2
    rig.feed("hello")
    rig.tokenize.work()
    rig.model.crew.busy = 1  # the other replica is scoring a batch of the old model
    rig.pipeline.swap.offer(candidate(new))
    assert not rig.model.has_work()  # no new batch starts meanwhile, on either model
    assert not rig.model.work()
    assert rig.pipeline.model is old and len(rig.to_model) == 1
    rig.model.crew.busy = 0  # it finished
    assert rig.model.has_work()
    assert rig.model.work()  # the swap, then the batch
    assert rig.pipeline.model is new
    assert [v.model_version for v in rig.verdicts()] == ["v2"]


def test_the_policy_switches_with_the_model() -> None:
    old = FakeModel(version="v1")
    new = FakeModel(version="v2")
    rig = Stages(old)
    rig.pipeline.policy = Policy(block_fake=0.9, review_fake=0.5, review_negative=0.8)
    rig.feed("maybe true")  # P(fake) = 0.6
    rig.tokenize.work()
    rig.model.work()
    before = rig.verdicts()
    rig.pipeline.swap.offer(candidate(new, Policy(block_fake=0.55, review_fake=0.3)))
    rig.feed("maybe true")
    rig.tokenize.work()
    rig.model.work()
    after = rig.verdicts()
    assert (before[0].model_version, before[0].action) == ("v1", Action.REVIEW)
    assert (after[0].model_version, after[0].action) == ("v2", Action.BLOCK)
    assert after[0].reasons == ["fake_score=0.6000>=block_fake=0.5500"]


def test_a_swap_updates_the_model_metrics() -> None:
    rig = Stages(FakeModel(version="v1"))
    ok = swaps("ok")
    before = time.time()  # earlier tests swapped too: the stamp must be this swap's
    rig.pipeline.swap.offer(candidate(FakeModel(version="v7")))
    rig.model.work()
    assert swaps("ok") == ok + 1
    info = {"version": "v7", "dir": str(Path("/models/v7"))}
    assert REGISTRY.get_sample_value("modstream_model_info", info) == 1.0
    stamp = REGISTRY.get_sample_value("modstream_model_last_swap_timestamp_seconds") or 0
    assert before <= stamp <= time.time()
    assert not rig.model.work()  # nothing waits any more


def test_a_newer_candidate_replaces_one_still_waiting() -> None:
    slot = SwapSlot()
    slot.offer(candidate(FakeModel(version="v2")))
    slot.offer(candidate(FakeModel(version="v3")))
    taken = slot.take()
    assert taken is not None and taken.model.version == "v3"
    assert slot.take() is None and not slot.waiting()


# --- loading and probing ------------------------------------------------------------------
class BrokenModel(FakeModel):
    """Loads, but scores NaN, or too few results, or lacks a label the policy reads."""

    def __init__(self, defect: str) -> None:
        super().__init__(version="broken")
        self.defect = defect
        if defect == "no fake label":
            self.labels = {"sentiment": ["negative", "positive"], "misinformation": ["a", "b"]}

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        scores = super().predict_encoded(items)
        if self.defect == "nan":
            scores[0]["misinformation"]["fake"] = float("nan")
        if self.defect == "short":
            scores.pop()
        return scores


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        ("nan", "misinformation/fake = nan, not a probability"),
        ("short", "returned 2 results for 3 probe texts"),
        ("no fake label", "has no misinformation label 'fake'"),
    ],
)
def test_the_probe_refuses_a_model_that_cannot_serve(defect: str, reason: str) -> None:
    problem = probe(BrokenModel(defect))
    assert problem is not None and reason in problem
    assert probe(FakeModel()) is None


def test_the_probe_refuses_a_model_that_raises() -> None:
    problem = probe(FakeModel(fail_on="*"))
    assert problem == "fails on the probe texts: RuntimeError: model exploded"


def test_load_candidate_refuses_what_does_not_load_or_has_bad_thresholds(tmp_path: Path) -> None:
    def missing(path: Path) -> FakeModel:
        raise FileNotFoundError(f"{path}/heads.safetensors is missing")

    refused = load_candidate(tmp_path, missing, lambda m: Policy())
    assert isinstance(refused, Refused)
    assert refused.path == tmp_path.resolve()
    assert refused.reason.startswith("does not load: FileNotFoundError")

    def bad_policy(model: object) -> Policy:
        return Policy(block_fake=0.4, review_fake=0.6)

    refused = load_candidate(tmp_path, lambda p: FakeModel(), bad_policy)
    assert isinstance(refused, Refused) and "review_fake must not exceed" in refused.reason
    loaded = load_candidate(tmp_path, lambda p: FakeModel(version="v9"), lambda m: Policy())
    assert isinstance(loaded, Candidate) and loaded.model.version == "v9"


# --- the reloader and its watcher --------------------------------------------------------
def artifact(root: Path, name: str, version: str, **policy: float) -> Path:
    directory = root / name
    directory.mkdir()
    config = {"version": version, "policy": policy or FakeModel.policy}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def flip(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically, as deploys do (a new link renamed over)."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


class FakeLoader:
    """Loads a fake whose version and policy are in the directory's config.json."""

    def __init__(self) -> None:
        self.loaded: list[Path] = []
        self.threads: list[str] = []

    def __call__(self, directory: Path) -> FakeModel:
        self.loaded.append(directory)
        self.threads.append(threading.current_thread().name)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} is missing")
        config = json.loads(config_path.read_text())
        if config["version"] == "corrupt":
            raise ValueError(f"{directory}/heads.safetensors is not a valid safetensors file")
        return FakeModel(version=config["version"], policy=config["policy"])


def policy_for(model: Classifier) -> Policy:
    return Policy.from_mapping(dict(model.policy), review_negative=0.7)  # a settings override


def reloader_at(link: Path, slot: SwapSlot, loader: FakeLoader, **kw: float) -> ModelReloader:
    return ModelReloader(link, slot, "v1", loader, policy_for, **kw)


def test_the_watcher_loads_the_artifact_a_symlink_flip_points_to(tmp_path: Path) -> None:
    first = artifact(tmp_path, "a", "v1")
    second = artifact(tmp_path, "b", "v2", block_fake=0.8, review_fake=0.4)
    link = tmp_path / "current"
    link.symlink_to(first)
    slot, loader = SwapSlot(), FakeLoader()
    reloader = reloader_at(link, slot, loader)

    assert reloader.check() is None and loader.loaded == []  # nothing changed, nothing loaded
    flip(link, second)
    offered = reloader.check()
    assert isinstance(offered, Candidate)
    assert loader.loaded == [second.resolve()]  # the resolved directory, not the link
    assert offered.policy == Policy(block_fake=0.8, review_fake=0.4, review_negative=0.7)
    taken = slot.take()
    assert taken is offered and taken.model.version == "v2"
    assert reloader.serving == "v2"
    assert reloader.check() is None  # seen already


def test_the_watcher_sees_files_replaced_in_place(tmp_path: Path) -> None:
    directory = artifact(tmp_path, "a", "v1")
    slot, loader = SwapSlot(), FakeLoader()
    reloader = reloader_at(directory, slot, loader)
    (directory / "config.json").write_text(json.dumps({"version": "v2-longer", "policy": {}}))
    offered = reloader.check()
    assert isinstance(offered, Candidate) and offered.model.version == "v2-longer"


def test_an_artifact_with_the_serving_version_is_not_swapped(tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(artifact(tmp_path, "a", "v1"))
    slot, loader = SwapSlot(), FakeLoader()
    reloader = reloader_at(link, slot, loader)
    flip(link, artifact(tmp_path, "copy", "v1"))
    ok, refused = swaps("ok"), swaps("refused")
    assert reloader.check() is None
    assert len(loader.loaded) == 1 and not slot.waiting()
    assert (swaps("ok"), swaps("refused")) == (ok, refused)


@pytest.mark.parametrize(
    ("make_broken", "reason"),
    [
        (lambda root: root / "nowhere", "config.json is missing"),
        (lambda root: artifact(root, "bad", "corrupt"), "is not a valid safetensors file"),
    ],
)
def test_a_broken_artifact_is_refused_and_the_old_model_keeps_serving(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    make_broken: Callable[[Path], Path],
    reason: str,
) -> None:
    link = tmp_path / "current"
    link.symlink_to(artifact(tmp_path, "a", "v1"))
    rig = Stages(FakeModel(version="v1"))
    loader = FakeLoader()
    reloader = reloader_at(link, rig.pipeline.swap, loader)
    broken = make_broken(tmp_path)
    refused_before = swaps("refused")

    flip(link, broken)
    with caplog.at_level(logging.ERROR, logger="worker.hotswap"):
        outcome = reloader.check()
    assert isinstance(outcome, Refused) and reason in outcome.reason
    assert swaps("refused") == refused_before + 1
    [line] = [r.getMessage() for r in caplog.records]
    assert str(link) in line and str(broken.resolve()) in line and reason in line
    assert "v1 keeps serving" in line
    assert not rig.pipeline.swap.waiting()
    rig.feed("fake news")
    rig.tokenize.work()
    rig.model.work()
    assert [v.model_version for v in rig.verdicts()] == ["v1"]
    assert reloader.serving == "v1"

    # Fixed by the next deploy: the watcher sees the change and swaps.
    flip(link, artifact(tmp_path, "fixed", "v3"))
    assert isinstance(reloader.check(), Candidate)


def test_sighup_asks_the_reloader_thread_to_load_without_a_change(tmp_path: Path) -> None:
    from worker.app import install_signal_handlers

    directory = artifact(tmp_path, "a", "v2")  # the serving one says v1: a reload swaps
    slot, loader = SwapSlot(), FakeLoader()
    reloader = reloader_at(directory, slot, loader, interval_s=0).start()
    previous = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        install_signal_handlers(Threaded().worker, reloader.request)
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(slot.waiting, "the reloader to offer the new model")
    finally:
        reloader.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert loader.loaded == [directory.resolve()]
    assert loader.threads == ["modstream-reload"]  # not the signal's (main) thread
    taken = slot.take()
    assert taken is not None and taken.model.version == "v2"


# --- the worker on threads ---------------------------------------------------------------
@pytest.mark.parametrize("replicas", [1, 2])
def test_posts_streaming_through_a_swap_are_each_scored_once(replicas: int) -> None:
    # Model calls that take a while, the old model's longer: with two replicas, a batch of
    # the new one would finish before the old one's last unless the swap waits for it.
    old = FakeModel(version="v1", delay_s=0.03)
    new = FakeModel(version="v2", first_id=1000, concurrency=replicas)
    rig = Threaded(model=old, max_size=8, replicas=replicas)
    n = 600
    texts = ["fake claim", "hello world", "I hate this"]
    rig.consumer.queue = [
        record(i // 2, {"post_id": f"p{i}", "text": texts[i % 3]}, i % 2) for i in range(n)
    ]
    pipeline = rig.worker._replicas[0]._pipeline  # the worker's pipeline, as app.run holds it
    with rig.running():
        wait_until(lambda: len(rig.verdict_ids()) >= 40, "the first verdicts")
        pipeline.swap.offer(candidate(new))
        wait_until(
            lambda: (
                rig.consumer.committed()
                == {Partition("posts", 0): n // 2, Partition("posts", 1): n // 2}
            ),
            "all commits",
        )
    assert rig.error is None
    verdicts = [v for v in rig.redis.items if isinstance(v, Verdict)]
    assert sorted(v.post_id for v in verdicts) == sorted(f"p{i}" for i in range(n))
    versions = [v.model_version for v in verdicts]
    switched = versions.index("v2")
    assert 0 < switched < n and set(versions[switched:]) == {"v2"}  # one switch, in order
    for v in verdicts:  # each scored right by the model that tokenised it
        expected = {"fake claim": Action.BLOCK, "hello world": Action.ALLOW}.get(
            texts[int(v.post_id[1:]) % 3], Action.REVIEW
        )
        assert v.action == expected, v


def test_a_sighup_while_the_worker_starts_neither_kills_it_nor_is_lost(tmp_path: Path) -> None:
    """SIGHUP's default action ends the process: a deploy that flips the model and signals
    every pod used to kill the pods still loading theirs (exit 129)."""
    from worker.app import ReloadRequests, install_startup_signal_handlers
    from worker.startup import StartupWait

    directory = artifact(tmp_path, "a", "v2")
    slot, loader = SwapSlot(), FakeLoader()
    reloads = ReloadRequests()
    previous = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    reloader = reloader_at(directory, slot, loader, interval_s=0)
    try:
        install_startup_signal_handlers(StartupWait(0.0), reloads)
        os.kill(os.getpid(), signal.SIGHUP)  # before the watcher exists: remembered
        time.sleep(0.05)
        assert loader.loaded == []
        reloads.attach(reloader.start())  # the worker runs: the reload is asked for now
        wait_until(slot.waiting, "the reloader to offer the new model")
    finally:
        reloader.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert loader.loaded == [directory.resolve()]


def test_a_flip_between_the_serving_load_and_the_watchers_start_is_a_change(
    tmp_path: Path,
) -> None:
    """The worker loads its model, then waits for Kafka and Redis before the watcher starts:
    a deploy in that gap was the watcher's baseline, so the old model served until the next
    deploy. The watcher now starts from the artifact as it was before the load."""
    first, second = artifact(tmp_path, "a", "v1"), artifact(tmp_path, "b", "v2")
    link = tmp_path / "current"
    link.symlink_to(first)
    before_load = fingerprint(link)
    flip(link, second)  # while the worker was starting
    slot, loader = SwapSlot(), FakeLoader()
    reloader = ModelReloader(link, slot, "v1", loader, policy_for, seen=before_load)
    offered = reloader.check()
    assert isinstance(offered, Candidate) and offered.model.version == "v2"
