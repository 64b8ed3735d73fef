"""Fault tests: real ``modstream run`` processes against real Kafka and Redis while a
dependency fails (issue 8). No mocks; outages of Redis and of the Kafka broker use private
processes (tests/integration/faults.py), never the shared stack.

Each scenario asserts that every post ends with its verdict in Redis and on the output
topic, that no worker had to be restarted (except where stopping it is the scenario), and
the exit status and time; it counts the duplicates on the output topic (at-least-once
allows them) and prints a one-line summary:

    FAULT <scenario> posts=N verdicts=N topic=N duplicates=N restarts=N recover_s=S ...
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaTimeoutError
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.faults import KafkaBroker, RedisServer
from tests.integration.helpers import (
    child_env,
    create_topics,
    events,
    free_port,
    read_to_end,
    read_topic,
    settings_for,
    to_bytes,
    verdict_keys,
    wait_for,
)
from worker.config import Settings
from worker.kafka_client import close_producer, committed_total, make_producer, security_kwargs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

GRACE_S = 5.0
# Small batches and one torch thread: several workers share a small CI machine.
WORKER_ENV = {
    "MODSTREAM_BATCH_MAX_SIZE": "8",
    "MODSTREAM_TORCH_THREADS": "1",
    "MODSTREAM_SINK_TIMEOUT_SECONDS": "5",
    "MODSTREAM_SHUTDOWN_GRACE_SECONDS": f"{GRACE_S:g}",
}
FIRST_VERDICTS_S = 240.0  # a cold model load on a loaded 2-core machine
MODEL_FAILURE_LIMIT = 5  # worker.loop.LoopConfig.model_failure_limit


# ---- a worker process ---------------------------------------------------------------------


@dataclass
class Child:
    """A ``python -m <module> run`` child with its metrics port; its output goes to ``log``."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, settings: Settings, log: Path, module: str = "worker", **extra: str) -> Child:
        port = free_port()
        env = child_env(
            settings,
            MODSTREAM_METRICS_PORT=str(port),
            MODSTREAM_METRICS_HOST="127.0.0.1",
            **{**WORKER_ENV, **extra},
        )
        args = [sys.executable, "-m", module] + (["run"] if module == "worker" else [])
        with log.open("ab") as out:
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        return cls(proc, port, log)

    def status(self, path: str) -> int:
        """The HTTP status of /healthz or /readyz; 0 when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def metric(self, name: str, **labels: str) -> float | None:
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=3) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                wanted = all(sample.labels.get(k) == v for k, v in labels.items())
                if sample.name == name and wanted:
                    return float(sample.value)
        return None

    def stop(self, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM; the exit status and the seconds it took to exit."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - sent

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@contextmanager
def children(*started: Child) -> Iterator[list[Child]]:
    kids = list(started)
    try:
        yield kids
    finally:
        for kid in kids:
            kid.cleanup()


@dataclass
class Sample:
    t: float
    healthz: int
    readyz: int
    sink_up: float | None
    running: bool


class Sampler:
    """Polls a worker's probes and one ``modstream_sink_up`` series every half second."""

    def __init__(self, child: Child, sink: str) -> None:
        self.child = child
        self.sink = sink
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(
                Sample(
                    time.monotonic(),
                    self.child.status("/healthz"),
                    self.child.status("/readyz"),
                    self.child.metric("modstream_sink_up", sink=self.sink),
                    self.child.proc.poll() is None,
                )
            )
            self._stop.wait(0.5)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t < end]


# ---- posts and results --------------------------------------------------------------------


def produce(settings: Settings, run_id: str, start: int, n: int) -> None:
    producer = make_producer(settings)
    try:
        for event in events(run_id, n, start=start):
            key = event["post_id"].encode()
            producer.send(settings.input_topic, key=key, value=to_bytes(event))
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def read_all(settings: Settings, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now; only those of committed
    transactions when the worker writes exactly once (a read_committed reader)."""
    exactly_once = settings.processing_guarantee == "exactly-once"
    return read_to_end(settings, topic, "read_committed" if exactly_once else "read_uncommitted")


def group_members(settings: Settings) -> list[Any]:
    """The members the broker holds in the settings' consumer group now."""
    admin = KafkaAdminClient(**security_kwargs(settings))
    try:
        return list(admin.describe_groups([settings.group_id])[settings.group_id]["members"])
    finally:
        admin.close()


def redis_ids(client: redis.Redis, run_id: str) -> set[str]:
    return {k.decode().rsplit(":", 1)[1] for k in verdict_keys(client, run_id)}


@dataclass
class Outcome:
    scenario: str
    posts: int
    verdicts: int = 0
    topic: int = 0
    duplicates: int = 0
    restarts: int = 0
    recover_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"FAULT {self.scenario} posts={self.posts} verdicts={self.verdicts} "
            f"topic={self.topic} duplicates={self.duplicates} restarts={self.restarts} "
            f"recover_s={self.recover_s:.1f} {extra}"
        ).rstrip()


def check_every_post(
    outcome: Outcome, settings: Settings, client: redis.Redis, run_id: str
) -> None:
    """Every post has its verdict in Redis and on the output topic; counts duplicates."""
    expected = {f"{run_id}-{i}" for i in range(outcome.posts)}
    in_redis = redis_ids(client, run_id)
    outcome.verdicts = len(in_redis & expected)
    on_topic = [json.loads(r.value)["post_id"] for r in read_all(settings, settings.output_topic)]
    outcome.topic = len(on_topic)
    outcome.duplicates = len(on_topic) - len(set(on_topic))
    assert in_redis == expected, f"missing in Redis: {sorted(expected - in_redis)[:10]}"
    missing = sorted(expected - set(on_topic))[:10]
    assert set(on_topic) == expected, f"missing on the topic: {missing}"
    if settings.processing_guarantee == "exactly-once":
        assert outcome.duplicates == 0, "a read_committed reader saw a verdict twice"


def report(outcome: Outcome, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\n" + outcome.line())


def stop_cleanly(child: Child) -> float:
    code, took = child.stop()
    assert code == 0, child.tail()
    assert took <= GRACE_S + 5, f"took {took:.1f}s to exit after SIGTERM"
    return took


# ---- scenarios ----------------------------------------------------------------------------


def started_redis(
    services: Any, run_id: str, tmp_path: Path, request: pytest.FixtureRequest, **overrides: Any
) -> tuple[RedisServer, Settings, redis.Redis]:
    """A private Redis (stopped at the end of the test), settings that use it, the topics."""
    server = RedisServer(tmp_path / "redis")
    request.addfinalizer(server.stop)
    server.start()
    settings = settings_for(
        dataclasses.replace(services, redis_url=server.url), run_id, **overrides
    )
    create_topics(settings)
    return server, settings, server.client()


def started_broker(
    services: Any, run_id: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[KafkaBroker, Settings, redis.Redis]:
    """A private Kafka broker (stopped at the end of the test), settings that use it, the
    topics, and a client of the shared Redis."""
    broker = KafkaBroker(tmp_path / "kafka")
    request.addfinalizer(broker.stop)
    broker.start()
    settings = settings_for(dataclasses.replace(services, kafka=broker.bootstrap), run_id)
    create_topics(settings)
    return broker, settings, redis.Redis.from_url(services.redis_url)


# Past the 60 s after which a stalled loop would fail liveness: the probe must not care.
REDIS_OUTAGE_S = 65


def test_a_redis_outage_mid_stream_makes_the_worker_unready_not_dead(
    services: Any,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    server, settings, client = started_redis(services, run_id, tmp_path, request)
    outcome = Outcome(f"redis-outage-{REDIS_OUTAGE_S}s", posts=300)
    produce(settings, run_id, 0, 100)
    with children(Child.start(settings, tmp_path / "worker.log")) as (worker,):
        wait_for(lambda: len(redis_ids(client, run_id)) >= 100, FIRST_VERDICTS_S, "100 verdicts")
        with Sampler(worker, "redis") as sampler:
            server.stop()
            stopped = time.monotonic()
            produce(settings, run_id, 100, 100)  # these arrive during the outage
            wait_for(lambda: worker.status("/readyz") == 503, 30, "/readyz 503 in the outage")
            time.sleep(max(0.0, stopped + REDIS_OUTAGE_S - time.monotonic()))
            committed_in_outage = committed_total(settings)
            server.start()
            back = time.monotonic()
            produce(settings, run_id, 200, 100)
            wait_for(lambda: len(redis_ids(client, run_id)) >= 300, 120, "all 300 verdicts")
            outcome.recover_s = time.monotonic() - back
            wait_for(lambda: worker.status("/readyz") == 200, 30, "/readyz 200 again")
        assert worker.metric("modstream_sink_up", sink="redis") == 1
        assert worker.proc.poll() is None, worker.tail()
        outcome.extra["exit_s"] = round(stop_cleanly(worker), 1)
    samples = sampler.samples
    assert samples and all(s.running and s.healthz == 200 for s in samples), "liveness failed"
    first_down = next(s.t for s in samples if s.t >= stopped and s.readyz == 503)
    outage = sampler.between(first_down, back)
    assert outage and all(s.readyz == 503 and s.sink_up == 0 for s in outage)
    assert committed_in_outage <= 100, "committed past verdicts Redis never held"
    outcome.extra["unready_s"] = round(back - first_down, 1)
    check_every_post(outcome, settings, client, run_id)
    report(outcome, capsys)


# Exactly-once: a transaction timeout well inside a Redis outage, so the broker always
# aborts the open transaction (it looks for expired ones every 10 s).
TXN_TIMEOUT_S = 10
TXN_OUTAGE_S = 30


def test_exactly_once_through_a_redis_outage_longer_than_the_transaction_timeout(
    services: Any,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """The broker aborts the transaction holding the verdicts sent before Redis went down,
    and kafka-python's recovery ends it under the worker: the abort fails, and the worker
    starts again in place with new clients (``restarts_in_place``), without exiting. A
    read_committed reader must see every post once: beginning the next transaction on the
    old producer once let its stale records land in it, seven verdicts twice."""
    server, settings, client = started_redis(
        services, run_id, tmp_path, request, processing_guarantee="exactly-once"
    )
    outcome = Outcome(f"redis-outage-{TXN_OUTAGE_S}s-exactly-once", posts=300)
    env = {"MODSTREAM_TRANSACTION_TIMEOUT_SECONDS": str(TXN_TIMEOUT_S)}
    log = tmp_path / "worker.log"
    produce(settings, run_id, 0, 100)
    with children(Child.start(settings, log, **env)) as (worker,):
        wait_for(lambda: len(redis_ids(client, run_id)) >= 100, FIRST_VERDICTS_S, "100 verdicts")
        server.stop()
        produce(settings, run_id, 100, 100)  # these arrive during the outage
        time.sleep(TXN_OUTAGE_S)
        server.start()
        back = time.monotonic()
        produce(settings, run_id, 200, 100)

        def done() -> bool:
            assert worker.proc.poll() is None, worker.tail()  # it never stops
            return committed_total(settings) >= 300

        wait_for(done, 120 + FIRST_VERDICTS_S, "all 300 offsets committed")
        outcome.recover_s = time.monotonic() - back
        text = log.read_text()
        aborts = text.count("aborting the transaction")
        assert aborts >= 1, "the expired transaction was never aborted"
        outcome.extra["aborts"] = aborts
        outcome.extra["restarts_in_place"] = text.count("starting again in place")
        outcome.extra["exit_s"] = round(stop_cleanly(worker), 1)
    check_every_post(outcome, settings, client, run_id)
    report(outcome, capsys)


# Posts produced before the broker stops: more than the worker scores while the broker
# shuts down, so that some it polled are still unwritten then and their writes fail during
# the outage (the input topic is on that broker: nothing can be produced during it).
BROKER_BACKLOG = 450


def test_the_kafka_broker_stopped_and_restarted_mid_stream(
    services: Any,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """README, "Failure behaviour": while the broker is down the worker stays alive, is
    unready with ``modstream_sink_up{sink="kafka"}`` 0 while a write fails, and commits
    nothing new (a commit needs the broker); it recovers by itself once the broker is back."""
    broker, settings, client = started_broker(services, run_id, tmp_path, request)
    outcome = Outcome("kafka-broker-restart", posts=BROKER_BACKLOG + 150)
    produce(settings, run_id, 0, BROKER_BACKLOG)
    with children(Child.start(settings, tmp_path / "worker.log")) as (worker,):
        wait_for(lambda: len(redis_ids(client, run_id)) >= 20, FIRST_VERDICTS_S, "verdicts")
        with Sampler(worker, "kafka") as sampler:
            broker.stop()
            stopped = time.monotonic()
            # A commit needs the broker: the worker's count of commits must not move now.
            commits_at_stop = worker.metric("modstream_offset_commits_total")
            polled = worker.metric("modstream_events_consumed_total", topic=settings.input_topic)
            # Redis holds a verdict before its Kafka write is acknowledged: posts polled
            # without one have a Kafka write still to come, which fails.
            in_hand = int(polled or 0) - len(redis_ids(client, run_id))
            assert in_hand > 0, "nothing polled was left to write: the scenario needs more posts"
            outcome.extra["in_hand_at_stop"] = in_hand
            time.sleep(max(0.0, stopped + 15 - time.monotonic()))
            commits_in_outage = worker.metric("modstream_offset_commits_total")
            broker.start()
            back = time.monotonic()
            outcome.extra["down_s"] = round(back - stopped, 1)
            produce(settings, run_id, BROKER_BACKLOG, 150)
            wait_for(
                lambda: len(redis_ids(client, run_id)) >= outcome.posts,
                180,
                f"all {outcome.posts} verdicts",
            )
            outcome.recover_s = time.monotonic() - back
            wait_for(lambda: worker.status("/readyz") == 200, 60, "/readyz 200 again")
        assert worker.metric("modstream_sink_up", sink="kafka") == 1
        assert worker.proc.poll() is None, worker.tail()
        outcome.extra["exit_s"] = round(stop_cleanly(worker), 1)
    samples = sampler.samples
    assert samples and all(s.running and s.healthz == 200 for s in samples), worker.tail()
    # From the first failed write until the broker is back, every sample is unready with the
    # sink down: the writer retries, and nothing it sends is acknowledged meanwhile.
    first_down = next((s.t for s in samples if stopped <= s.t < back and s.readyz == 503), None)
    assert first_down is not None, f"/readyz never 503 while the broker was down: {worker.tail()}"
    outage = sampler.between(first_down, back)
    assert outage and all(s.readyz == 503 and s.sink_up == 0 for s in outage), [
        (round(s.t - stopped, 1), s.readyz, s.sink_up) for s in outage
    ]
    assert commits_at_stop is not None and commits_in_outage == commits_at_stop, (
        f"offsets committed while the broker was down: {commits_at_stop} -> {commits_in_outage}"
    )
    outcome.extra["unready_s"] = round(back - first_down, 1)
    check_every_post(outcome, settings, client, run_id)
    report(outcome, capsys)


@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_a_producer_holding_records_for_a_stopped_broker_closes_within_its_timeout(
    services: Any,
    run_id: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """kafka-python's close flushes first and raises when records cannot be delivered by the
    timeout, with its network thread left running: that made a worker's restart in place
    (and its stop) fail whenever its old producer still held records. ``close_producer``
    abandons them (their input offsets are not committed) and stops the thread.

    (kafka-python 3.0.12 leaves the socket of each refused connection attempt to the garbage
    collector: the warning filter, the collection at the end, and no captured log record
    holding the refusals' tracebacks keep those sockets' warnings in this test.)"""
    caplog.set_level(logging.CRITICAL, logger="kafka")
    broker, settings, _ = started_broker(services, run_id, tmp_path, request)
    producer = make_producer(settings)
    producer.send(settings.output_topic, b"delivered").get(timeout=60)
    broker.stop()
    pending = producer.send(settings.output_topic, b"undeliverable")
    with pytest.raises(KafkaTimeoutError):  # the library's own close, for contrast
        producer.close(timeout=1)
    assert producer._sender.is_alive() and not pending.is_done
    close_producer(producer, 1.0)
    assert not producer._sender.is_alive()
    assert pending.failed()
    del producer, pending
    gc.collect()


def sigterm_during_a_broker_outage(
    services: Any,
    run_id: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    outcome: Outcome,
    **env: str,
) -> Settings:
    """A worker with a sink timeout three times its grace (as the defaults' 30 s to 20 s)
    scores some posts, the broker stops, SIGTERM: it exits 0 within its grace (counted from
    the signal: a commit in progress ends within it), the last commit (FINAL_COMMIT_S), the
    stages' join (2 s) and the producer's close (5 s). Once the broker is back a new worker
    finishes every post. ``env``: the workers' own settings (the guarantee)."""
    broker, settings, client = started_broker(services, run_id, tmp_path, request)
    produce(settings, run_id, 0, outcome.posts)
    env = {"MODSTREAM_SINK_TIMEOUT_SECONDS": f"{3 * GRACE_S:g}", **env}
    with children(Child.start(settings, tmp_path / "worker.log", **env)) as (worker,):
        wait_for(lambda: len(redis_ids(client, run_id)) >= 20, FIRST_VERDICTS_S, "verdicts")
        broker.stop()
        time.sleep(3)  # the writer's sends and the commits to the broker block from here on
        code, took = worker.stop()
        outcome.extra["exit_s"] = round(took, 1)
        assert code == 0, worker.tail()
        assert took <= GRACE_S + 5 + 2 + 5 + 3, f"took {took:.1f}s to exit after SIGTERM"
    broker.start()
    outcome.extra["done_at_exit"] = committed_total(settings)
    back = time.monotonic()
    with children(Child.start(settings, tmp_path / "worker2.log", **env)) as (second,):
        wait_for(
            lambda: committed_total(settings) >= outcome.posts, FIRST_VERDICTS_S, "every offset"
        )
        outcome.recover_s = time.monotonic() - back
        outcome.restarts = 1
        stop_cleanly(second)
    check_every_post(outcome, settings, client, run_id)
    return settings


def test_sigterm_while_the_kafka_broker_is_down(
    services: Any,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """An orchestrator stops the worker during a broker outage (a rollout in an incident):
    it exits in time, abandoning the verdicts it could not send, nothing lost. It took 58 s
    when a commit waited for kafka-python's request timeout (305 s) and the producer's
    close raised from its flush, and up to the sink timeout more (15 s here) while the
    grace began after a commit in progress."""
    outcome = Outcome("sigterm-while-broker-down", posts=200)
    sigterm_during_a_broker_outage(services, run_id, tmp_path, request, outcome)
    report(outcome, capsys)


def test_sigterm_while_the_kafka_broker_is_down_in_exactly_once_mode(
    services: Any,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """The same in exactly-once mode: the open transaction can be neither committed nor
    aborted while the broker is down, and the abort at exit keeps to what is left of the
    grace (the broker aborts the transaction on its timeout; the next producer fences it).
    A read_committed reader then sees every post once."""
    outcome = Outcome("sigterm-while-broker-down-exactly-once", posts=200)
    eos = {
        "MODSTREAM_PROCESSING_GUARANTEE": "exactly-once",
        "MODSTREAM_TRANSACTIONAL_ID": f"{run_id}-worker-0",
    }
    settings = sigterm_during_a_broker_outage(services, run_id, tmp_path, request, outcome, **eos)
    committed = read_topic(settings, settings.output_topic, 200, isolation_level="read_committed")
    ids = [json.loads(r.value)["post_id"] for r in committed]
    assert sorted(set(ids)) == sorted(f"{run_id}-{i}" for i in range(200))
    assert len(ids) == 200, f"{len(ids) - 200} verdicts twice for a read_committed reader"
    report(outcome, capsys)


def test_three_workers_one_killed_mid_stream(
    services: Any, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings, partitions=6)
    client = redis.Redis.from_url(services.redis_url)
    outcome = Outcome("three-workers-one-kill-9", posts=300)
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    with children(*(Child.start(settings, log) for log in logs)) as workers:

        def assigned(w: Child) -> float:
            return w.metric("modstream_assigned_partitions") or 0.0

        wait_for(
            lambda: (
                all(assigned(w) > 0 for w in workers) and sum(assigned(w) for w in workers) == 6
            ),
            FIRST_VERDICTS_S,
            "three members sharing the six partitions",
        )
        produce(settings, run_id, 0, 300)
        victim, *survivors = workers
        wait_for(lambda: (victim.metric("modstream_verdicts_total", action="allow") or 0) > 0,
                 120, "the first verdicts of the victim")  # fmt: skip
        victim.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert victim.proc.wait(30) == -signal.SIGKILL
        outcome.extra["done_at_kill"] = len(redis_ids(client, run_id))
        wait_for(lambda: len(redis_ids(client, run_id)) >= 300, 180, "all 300 verdicts")
        outcome.recover_s = time.monotonic() - killed
        for w in survivors:
            assert w.proc.poll() is None and w.status("/healthz") == 200, w.tail()
        outcome.extra["exit_s"] = max(round(stop_cleanly(w), 1) for w in survivors)
    check_every_post(outcome, settings, client, run_id)
    report(outcome, capsys)


def test_sigterm_under_backlog_exits_within_the_grace_time_and_loses_nothing(
    services: Any, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings)
    client = redis.Redis.from_url(services.redis_url)
    # A backlog the grace time cannot drain: all of it is polled at once (max_poll_records).
    posts, grace = 1500, 2.0
    outcome = Outcome("sigterm-under-backlog", posts=posts, restarts=1)
    produce(settings, run_id, 0, posts)
    log = tmp_path / "worker.log"
    env = {"MODSTREAM_SHUTDOWN_GRACE_SECONDS": f"{grace:g}"}
    with children(Child.start(settings, log, **env)) as (first,):
        wait_for(lambda: len(redis_ids(client, run_id)) >= 16, FIRST_VERDICTS_S, "verdicts")
        assert len(group_members(settings)) == 1
        code, took = first.stop()
        assert code == 0, first.tail()
        assert took <= grace + 5, f"took {took:.1f}s to exit after SIGTERM"
    # It left the group: a member that had not would stay until the session timeout (45 s),
    # and its partitions with it.
    wait_for(lambda: group_members(settings) == [], 10, "the group without its member")
    outcome.extra["exit_s"] = round(took, 1)
    done = len(redis_ids(client, run_id))
    outcome.extra["done_at_exit"] = done
    assert done < posts, "no backlog was left at SIGTERM: the scenario needs more posts"
    assert committed_total(settings) <= done, "committed records without a verdict"
    with children(Child.start(settings, log)) as (second,):
        wait_for(lambda: len(redis_ids(client, run_id)) >= posts, FIRST_VERDICTS_S, "the rest")
        outcome.recover_s = time.monotonic() - second.started
        stop_cleanly(second)
    check_every_post(outcome, settings, client, run_id)
    report(outcome, capsys)


def test_an_always_failing_model_stops_the_worker_and_commits_nothing(
    services: Any, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(services, run_id)
    create_topics(settings)
    client = redis.Redis.from_url(services.redis_url)
    outcome = Outcome("always-failing-model", posts=100)
    produce(settings, run_id, 0, 100)
    log = tmp_path / "worker.log"
    with children(Child.start(settings, log, module="tests.integration.failing_model")) as (w,):
        code = w.proc.wait(FIRST_VERDICTS_S)
        took = time.monotonic() - w.started
    assert code == 4, w.tail()
    assert "the model is broken" in log.read_text()
    letters = read_all(settings, settings.dlq_topic)
    committed = committed_total(settings)
    assert len(letters) <= MODEL_FAILURE_LIMIT, f"{len(letters)} dead letters: a flood"
    assert committed <= len(letters), "committed posts that were neither scored nor dead-lettered"
    assert redis_ids(client, run_id) == set()
    assert read_all(settings, settings.output_topic) == []
    outcome.extra.update(exit_code=code, run_s=round(took, 1), dead_letters=len(letters),
                         committed=committed)  # fmt: skip
    report(outcome, capsys)


def test_a_worker_started_while_redis_is_down_waits_unready_then_scores_the_backlog(
    services: Any,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    password = f"pw-{run_id}"
    server = RedisServer(tmp_path / "redis", password=password)  # not started yet
    request.addfinalizer(server.stop)
    settings = settings_for(dataclasses.replace(services, redis_url=server.url), run_id)
    create_topics(settings)
    outcome = Outcome("start-while-redis-down", posts=100)
    produce(settings, run_id, 0, 100)
    log = tmp_path / "worker.log"
    with children(Child.start(settings, log)) as (worker,):
        wait_for(lambda: "waiting for a dependency" in log.read_text(), FIRST_VERDICTS_S,
                 "the worker waiting for Redis")  # fmt: skip
        with Sampler(worker, "redis") as sampler:
            time.sleep(5)
            server.start()
            back = time.monotonic()
            client = server.client()
            wait_for(lambda: len(redis_ids(client, run_id)) >= 100, 120, "all 100 verdicts")
            outcome.recover_s = time.monotonic() - back
            wait_for(lambda: worker.status("/readyz") == 200, 30, "/readyz 200")
        waiting = sampler.between(0, back)
        assert waiting and all(
            s.running and s.healthz == 200 and s.readyz == 503 and s.sink_up == 0 for s in waiting
        )
        outcome.extra["exit_s"] = round(stop_cleanly(worker), 1)
    text = log.read_text()
    assert "MODSTREAM_REDIS_URL" in text and password not in text
    outcome.extra["retries_logged"] = text.count("waiting for a dependency")
    check_every_post(outcome, settings, client, run_id)
    report(outcome, capsys)
