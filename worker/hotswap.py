"""Model hot-swap: load a new artifact beside the serving one, probe it, switch between batches.

    SIGHUP, or the artifact at MODSTREAM_MODEL_DIR changed (polled: a symlink flip)
      -> ModelReloader, on its own thread: load, probe, build the policy
           refused (missing file, bad weights, failing probe): a log line and a metric,
           and the old model keeps serving
      -> SwapSlot.offer(candidate)
      -> the model stage, between two batches: Pipeline.apply_swap(), the one place where
         the model and its policy change, together

Scoring goes on while the candidate loads. The tokenise stage reads the pipeline's model
per chunk and tags each post with the version that tokenised it; the model stage tokenises
again the posts of a batch formed before the swap, so a post is always scored by the model
that tokenised it. No post is dropped or scored twice: a swap changes which model scores
the next batch, nothing else (offsets, batches and sinks are untouched).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.base import MISINFORMATION, SENTIMENT, Classifier, Scores
from worker import metrics
from worker.config import Settings
from worker.policy import Policy

log = logging.getLogger(__name__)

Loader = Callable[[Path], Classifier]
PolicyFor = Callable[[Classifier], Policy]
# The directory the model path resolves to, and (name, size, mtime) of each file in it.
Fingerprint = tuple[str, tuple[tuple[str, int, int], ...]]

# Scored by a candidate before it may serve: short, a false claim, and one longer than a
# model window (several rows folded back into one result).
PROBE_TEXTS = (
    "Great game tonight, so proud of the team!",
    "Drinking bleach cures covid, share before they delete it",
    "The council meets on Tuesday to vote on the new budget. " * 30,
)
# The scores the policy reads: a model without them cannot serve.
POLICY_SCORES = ((MISINFORMATION, "fake"), (SENTIMENT, "negative"))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A loaded and probed model with its policy, ready to serve."""

    model: Classifier
    policy: Policy
    path: Path  # the directory it was loaded from, symlinks resolved
    load_s: float  # load + probe + policy, on the reloader's thread


@dataclass(frozen=True, slots=True)
class Refused:
    """An artifact that may not serve, and why."""

    path: Path
    reason: str


def probe(model: Classifier) -> str | None:
    """Why ``model`` may not serve, or None: it must score :data:`PROBE_TEXTS` with one
    result each, every score a finite probability, including the ones the policy reads."""
    for task, label in POLICY_SCORES:
        if label not in model.labels.get(task, ()):
            return f"has no {task} label {label!r}, which the policy reads"
    try:
        scores = model.predict(list(PROBE_TEXTS))
    except Exception as exc:  # noqa: BLE001 - a model may fail in any way; that is the probe
        return f"fails on the probe texts: {type(exc).__name__}: {exc}"
    if len(scores) != len(PROBE_TEXTS):
        return f"returned {len(scores)} results for {len(PROBE_TEXTS)} probe texts"
    for i, result in enumerate(scores):
        problem = score_problem(result)
        if problem is not None:
            return f"gives {problem} for probe text {i}"
    return None


def score_problem(result: Scores) -> str | None:
    """Why one post's ``result`` cannot be acted on, or None: the scores the policy reads
    must be there and every score a finite probability (a NaN would fail every threshold
    test, so pass as "allow")."""
    for task, label in POLICY_SCORES:
        if label not in result.get(task, {}):
            return f"no {task} {label!r} score"
    for task, by_label in result.items():
        for label, value in by_label.items():
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                return f"{task}/{label} = {value}, not a probability"
    return None


def load_candidate(directory: Path, load: Loader, policy_for: PolicyFor) -> Candidate | Refused:
    """Load the artifact at ``directory`` (resolved first, so a flip during the load cannot
    mix two artifacts), probe it and build its policy. Never raises: a refusal is a value."""
    path = directory.resolve()
    started = time.perf_counter()
    try:
        model = load(path)
    except Exception as exc:  # noqa: BLE001 - missing files, bad hashes, wrong shapes, ...
        return Refused(path, f"does not load: {type(exc).__name__}: {exc}")
    problem = probe(model)
    if problem is not None:
        return Refused(path, problem)
    try:
        policy = policy_for(model)
    except (ValueError, TypeError) as exc:
        return Refused(path, f"has unusable policy thresholds: {exc}")
    return Candidate(model, policy, path, time.perf_counter() - started)


def fingerprint(directory: Path) -> Fingerprint:
    """What a deploy changes: the directory the path resolves to (a symlink flip), and each
    file's size and modification time (files replaced in place, or a Kubernetes volume's
    ``..data`` flip, where every file is a symlink into the new version)."""
    resolved = os.path.realpath(directory)
    files = []
    try:
        for entry in os.scandir(resolved):
            if entry.is_file():  # follows symlinks
                st = entry.stat()
                files.append((entry.name, st.st_size, st.st_mtime_ns))
    except OSError:
        pass  # gone or unreadable: loading it will say why
    return resolved, tuple(sorted(files))


class SwapSlot:
    """Hands a candidate from the reloader's thread to the model stage's. At most one waits:
    a newer one replaces it (the older one never served). Any thread may call it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: Candidate | None = None

    def offer(self, candidate: Candidate) -> None:
        with self._lock:
            self._waiting = candidate

    def waiting(self) -> bool:
        return self._waiting is not None

    def take(self) -> Candidate | None:
        """The waiting candidate, if any, counted as served from now on (metrics, log)."""
        with self._lock:
            candidate, self._waiting = self._waiting, None
        if candidate is not None:
            version = candidate.model.version
            metrics.MODEL_INFO.info({"version": version, "dir": str(candidate.path)})
            metrics.MODEL_SWAPS.labels("ok").inc()
            metrics.MODEL_LAST_SWAP.set(time.time())
            log.info("hot-swap: model %s (%s) scores from this batch on", version, candidate.path)
        return candidate


class ModelReloader:
    """Loads a new model when asked (SIGHUP) or when the artifact changes, on its own thread,
    and offers it to the :class:`SwapSlot`. ``interval_s``: how often the artifact is
    checked (0: only on request)."""

    def __init__(
        self,
        directory: Path,
        slot: SwapSlot,
        serving: str,
        load: Loader,
        policy_for: PolicyFor,
        *,
        interval_s: float = 5.0,
        seen: Fingerprint | None = None,
    ) -> None:
        self._dir = directory
        self._slot = slot
        self.serving = serving  # the version serving, or offered to serve from the next batch
        self._load = load
        self._policy_for = policy_for
        self._interval = interval_s
        # ``seen``: the artifact as it was when the serving model was loaded (taken before
        # the load): a deploy between that load and this watcher's start is then a change.
        self._seen = seen if seen is not None else fingerprint(directory)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """Reload now. Only sets an event: safe to call from a signal handler."""
        self._wake.set()

    def check(self, forced: bool = False) -> Candidate | Refused | None:
        """One round: if ``forced`` or the artifact changed since the last round, load it and
        offer it. Returns what was offered or refused; None when nothing was to be done."""
        now = fingerprint(self._dir)
        changed, self._seen = now != self._seen, now
        if not (forced or changed):
            return None
        why = "reload requested" if forced else "the model artifact changed"
        log.info("%s: loading %s (%s) beside %s", why, self._dir, now[0], self.serving)
        outcome = load_candidate(Path(now[0]), self._load, self._policy_for)
        if isinstance(outcome, Refused):
            metrics.MODEL_SWAPS.labels("refused").inc()
            log.error(
                "hot-swap refused: the model at %s (%s) %s; %s keeps serving",
                self._dir,
                outcome.path,
                outcome.reason,
                self.serving,
            )
            return outcome
        version = outcome.model.version
        if version == self.serving:
            log.info("%s holds %s, which already serves: nothing to swap", outcome.path, version)
            return None
        self._slot.offer(outcome)
        log.info(
            "model %s loaded and probed in %.2fs; it replaces %s from the next batch",
            version,
            outcome.load_s,
            self.serving,
        )
        self.serving = version
        return outcome

    def start(self) -> ModelReloader:
        self._thread = threading.Thread(target=self._run, name="modstream-reload", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            forced = self._wake.wait(self._interval if self._interval > 0 else None)
            if self._stopping:
                return
            self._wake.clear()  # requests while this round runs are served by it
            try:
                self.check(forced)
            except Exception:  # the watcher must outlive any surprise
                log.exception("model reload failed; the serving model stays")

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop watching. A load in progress is left behind (a daemon thread)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def artifact_loader(settings: Settings) -> Loader:
    """Loads an artifact as the worker's start-up does (device, backend, windows, threads
    and replicas: the new model is laid out as the one it replaces)."""

    def load(directory: Path) -> Classifier:
        from models.runtime import load_predictor

        return load_predictor(
            directory,
            settings.device,
            backend=settings.backend,
            max_windows=settings.max_windows,
            threads=settings.torch_threads,
            replicas=settings.model_replicas,
        )

    return load
