"""The worker as several processes, one consumer group, from one backlog.

One worker process shares one interpreter lock among its consumer, tokeniser, model
replicas and writer; when the model is fast (a GPU, the bench's fast network) the host's
work on that lock sets the pace (``benchmarks/HISTORY.md``, The producer's batches). The
product scales out by adding processes to the consumer group, and nothing stops several
of them sharing a machine or a GPU. This phase measures that: ``processes`` real workers
(``worker.app.build_worker``, each with one model replica on its share of the CPU threads,
each its own process started with ``spawn``) join one group and work through a backlog
together. Timed from the moment the group settles with every member to its last commit,
read from the broker by this process (which runs no worker: a poll every 0.1 s is all it
costs the machine).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from contextlib import ExitStack
from multiprocessing.synchronize import Event
from typing import Literal

from kafka import KafkaAdminClient, KafkaConsumer
from worker_phases import (  # benchmarks/ is on the path
    ScoresNothing,
    WorkerRun,
    backlog_events,
    fast_network,
    wait,
)

from models import DEFAULT_ARTIFACT_DIR
from models.base import Classifier
from models.runtime import load_predictor
from modstream_dev.stack import create_topics
from worker.app import build_worker
from worker.config import Settings
from worker.kafka_client import committed_total, security_kwargs
from worker.produce import produce

Kind = Literal["model", "nothing", "fast"]
START_S = 300.0  # the members' start-up (model loading) at most


def _model(kind: Kind, device: str, threads: int) -> Classifier:
    predictor = load_predictor(DEFAULT_ARTIFACT_DIR, device=device, threads=threads, replicas=1)
    if kind == "nothing":
        return ScoresNothing(predictor)
    if kind == "fast":
        return fast_network(DEFAULT_ARTIFACT_DIR, predictor)
    return predictor


def _member(
    settings: Settings, kind: Kind, device: str, threads: int, ready: Event, go: Event, stop: Event
) -> None:
    """One worker process: built (model loaded on ``threads`` torch threads, clients
    connected), then run on ``go`` until ``stop``."""
    with ExitStack() as stack:
        worker = build_worker(settings, _model(kind, device, threads), stack)
        ready.set()
        go.wait()
        thread = threading.Thread(target=worker.run, name="bench-worker")
        thread.start()
        stop.wait()
        worker.request_stop()
        thread.join(60)


class _Group:
    """The group as the broker sees it: its members, and its committed offsets summed over
    the input topic."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin = KafkaAdminClient(**security_kwargs(settings))
        self._consumer = KafkaConsumer(  # kept open: asked ten times a second
            **security_kwargs(settings), group_id=settings.group_id, enable_auto_commit=False
        )

    def stable_with(self, members: int) -> bool:
        gid = self._settings.group_id
        group = self._admin.describe_groups([gid])[gid]
        return group.get("group_state") == "Stable" and len(group.get("members", ())) == members

    def committed(self) -> int:
        return committed_total(self._settings, self._consumer)

    def close(self) -> None:
        self._consumer.close()
        self._admin.close()


def in_processes(
    texts: list[str],
    settings: Settings,
    processes: int,
    threads: int,
    kind: Kind = "model",
    device: str = "auto",
) -> WorkerRun:
    """``processes`` workers of one group, each one replica on ``threads`` torch threads,
    from a backlog of ``texts`` (``kind``: the shipped model, one that scores nothing, or
    the fast network). ``settings``: a phase's own (bench_settings)."""
    create_topics(settings)
    produce(settings, backlog_events(texts, settings.group_id))
    ctx = multiprocessing.get_context("spawn")  # CUDA and torch's threads do not survive fork
    readies = [ctx.Event() for _ in range(processes)]
    go, stop = ctx.Event(), ctx.Event()
    members = [
        ctx.Process(
            target=_member,
            args=(settings, kind, device, threads, ready, go, stop),
            name=f"bench-member-{i}",
            daemon=True,
        )
        for i, ready in enumerate(readies)
    ]
    for member in members:
        member.start()
    group = _Group(settings)
    try:
        deadline = time.monotonic() + START_S
        for ready, member in zip(readies, members, strict=True):
            while not ready.wait(0.5):
                if not member.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{member.name} did not start (exit {member.exitcode})")
        go.set()

        def alive() -> bool:
            if dead := [m.name for m in members if not m.is_alive()]:
                raise RuntimeError(f"{', '.join(dead)} stopped before the backlog was done")
            return True

        # Timed once every member holds its partitions (the first to join may start
        # alone and give partitions up at the next join): what it did before is left out.
        wait(lambda: alive() and group.stable_with(processes), "the group to settle")
        first, started = group.committed(), time.perf_counter()
        wait(lambda: alive() and group.committed() >= len(texts), "every offset")
        run = WorkerRun(len(texts) - first, time.perf_counter() - started)
    finally:
        stop.set()
        for member in members:
            member.join(90)
            if member.is_alive():
                member.kill()
        group.close()
    return run
