"""Wiring and lifecycle: build every part from the settings, run the loop, tear down."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType
from typing import TypeVar

from kafka.errors import KafkaError, KafkaTimeoutError

from models.base import Classifier
from worker import metrics
from worker.batcher import BatchLimits, MicroBatcher, Size
from worker.config import ConfigError, Settings
from worker.consumer import Consumer, InputConsumer
from worker.errors import StartupError, UnavailableError
from worker.flow import Prepared
from worker.health import HealthServer
from worker.hotswap import Fingerprint, ModelReloader, artifact_loader, fingerprint
from worker.kafka_client import close_producer, make_consumer, make_producer
from worker.loop import LoopConfig, TransactionAbortError, Worker
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.probes import Probes
from worker.schema import DeadLetter, Verdict
from worker.sinks import Sink
from worker.sinks.kafka import WRITER_PRODUCER, DeadLetterSink, KafkaVerdictSink
from worker.sinks.redis import RedisVerdictSink, connect_redis
from worker.stages import ModelBrokenError
from worker.startup import StartupInterruptedError, StartupWait
from worker.transactions import Transactions

log = logging.getLogger(__name__)


def load_model(settings: Settings) -> Classifier:
    from models.artifact import ArtifactError
    from models.runtime import load_predictor

    try:
        return load_predictor(
            settings.model_dir,
            settings.device,
            backend=settings.backend,
            max_windows=settings.max_windows,
            threads=settings.torch_threads,
            replicas=settings.model_replicas,
        )
    except (ArtifactError, RuntimeError) as exc:
        raise StartupError(f"model at MODSTREAM_MODEL_DIR={settings.model_dir}: {exc}") from exc


def make_policy(settings: Settings, model: Classifier) -> Policy:
    """The model's thresholds with the settings' on top; a combination that cannot work
    (review above block) is a ConfigError naming what was set and what the model has."""
    overrides = {
        "block_fake": settings.policy_block_fake,
        "review_fake": settings.policy_review_fake,
        "review_negative": settings.policy_review_negative,
    }
    try:
        return Policy.from_mapping(dict(model.policy), **overrides)
    except ValueError as exc:
        given = [f"MODSTREAM_POLICY_{k.upper()}={v}" for k, v in overrides.items() if v is not None]
        raise ConfigError(
            f"{exc}: set {', '.join(given) or 'nothing'}; model {model.version} has "
            f"{dict(model.policy)}"
        ) from None


def loop_config(settings: Settings) -> LoopConfig:
    return LoopConfig(
        poll_timeout_ms=settings.poll_timeout_ms,
        max_poll_records=settings.max_poll_records,
        max_pending=settings.max_pending_records,
        max_event_bytes=settings.max_event_bytes,
        shutdown_grace_s=settings.shutdown_grace_seconds,
        commit_interval_s=settings.commit_interval_ms / 1000.0,
    )


def batch_limits(settings: Settings, replicas: int) -> BatchLimits:
    """The batcher's limits. The token budget bounds the tokens in the model at once, so
    ``replicas`` batches scored side by side share it: each gets an equal part (over 300
    batches of long posts, two replicas peaked at 1,411 MiB with half the budget each and
    1,785 MiB with the whole, at the same speed)."""
    return BatchLimits(
        settings.batch_max_size,
        settings.batch_max_wait_ms / 1000.0,
        max(1, settings.batch_token_budget // max(1, replicas)),
        settings.batch_max_padding,
    )


def make_pipeline(
    settings: Settings, model: Classifier, *, replay_id: str | None = None
) -> Pipeline:
    return Pipeline(
        model,
        make_policy(settings, model),
        Pseudonymiser(settings.pseudonym_key.get_secret_value().encode()),
        store_text=settings.store_text,
        replay_id=replay_id,
    )


def build_worker(
    settings: Settings,
    model: Classifier,
    stack: ExitStack,
    *,
    consumer: Consumer | None = None,
    pipeline: Pipeline | None = None,
    extra_sinks: tuple[Sink[Verdict], ...] = (),
    wrap_dead_letters: Callable[[Sink[DeadLetter]], Sink[DeadLetter]] = lambda s: s,
    wait: StartupWait | None = None,
) -> Worker:
    """Connect to Redis and Kafka and assemble the loop; every resource joins ``stack``.
    A replay passes its bounded ``consumer``, its ``pipeline`` and sinks of its own.
    ``wait``: wait for a dependency that does not answer yet (``modstream run``); without
    it, one that does not answer is a :class:`StartupError` at once."""

    def up(connect: Callable[[], _T], sinks: tuple[str, ...]) -> _T:
        return connect() if wait is None else wait.until_up(connect, sinks)

    # Pings; a refusal names the setting, never the secret.
    client = up(lambda: connect_redis(settings), ("redis",))
    redis_sink = RedisVerdictSink(client, settings.redis_key_prefix, settings.redis_ttl_seconds)
    stack.callback(redis_sink.close)
    kafka_sinks = ("kafka", "dead_letter")
    # Exactly-once applies to the live group; a replay commits nothing to it.
    exactly_once = settings.processing_guarantee == "exactly-once" and consumer is None
    txn_id: dict[str, object] = (
        {
            "transactional_id": settings.txn_id,
            "transaction_timeout_ms": settings.transaction_timeout_seconds * 1000,
        }
        if exactly_once
        else {}
    )
    producer = up(
        lambda: _kafka_client(settings, lambda s: make_producer(s, **WRITER_PRODUCER, **txn_id)),
        kafka_sinks,
    )
    # Bounded: a writer stuck on a dead broker must not hold the process at exit.
    stack.callback(close_producer, producer, 5.0)
    transactions: Transactions | None = None
    if consumer is None:
        isolation = {"isolation_level": "read_committed"} if exactly_once else {}
        kafka_consumer = up(
            lambda: _kafka_client(settings, lambda s: make_consumer(s, **isolation)), kafka_sinks
        )
        live = InputConsumer(
            kafka_consumer, settings.input_topic, commit_timeout_s=settings.sink_timeout_seconds
        )
        stack.callback(live.close)  # closes first: leaves the group before the producer goes
        consumer = live
        if exactly_once:
            transactions = Transactions(
                producer, kafka_consumer.group_metadata, settings.sink_timeout_seconds
            )
            up(lambda: _start_transactions(settings, transactions), kafka_sinks)
    timeout = settings.sink_timeout_seconds
    pipeline = pipeline or make_pipeline(settings, model)
    limits = batch_limits(settings, pipeline.model.concurrency)
    batcher: MicroBatcher[Prepared] = MicroBatcher(
        limits,
        lambda p: Size(p.encoded.rows, p.encoded.tokens),
        rows_padded=lambda rows: pipeline.model.padded_shape(rows, 1)[0],  # the model now
    )
    return Worker(
        consumer,
        batcher,
        pipeline,
        [redis_sink, KafkaVerdictSink(producer, settings.output_topic, timeout), *extra_sinks],
        wrap_dead_letters(DeadLetterSink(producer, settings.dlq_topic, timeout)),
        loop_config(settings),
        transactions=transactions,
    )


_T = TypeVar("_T")


def _kafka_client(settings: Settings, make: Callable[[Settings], _T]) -> _T:
    """A Kafka client from ``make``; any failure is a StartupError naming the setting."""
    try:
        return make(settings)
    except StartupError:
        raise
    except Exception as exc:
        raise StartupError(
            f"Kafka at MODSTREAM_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers} "
            f"is not usable: {exc!r}"
        ) from exc


def _start_transactions(settings: Settings, transactions: Transactions) -> None:
    """Fence this transactional id's earlier instances and open the first transaction."""
    where = (
        f"Kafka at MODSTREAM_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers} "
        f"(MODSTREAM_TRANSACTIONAL_ID={settings.txn_id})"
    )
    try:
        transactions.start()
    except KafkaTimeoutError as exc:
        raise UnavailableError(f"{where} did not start a transaction: {exc}") from exc
    except KafkaError as exc:
        raise StartupError(f"{where} refused transactions: {exc!r}") from exc


def install_signal_handlers(worker: Worker, reload: Callable[[], None] | None = None) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if worker.stopping:
            log.warning("second signal %d: abandoning the batch in hand", signum)
            raise KeyboardInterrupt
        log.info("signal %d: draining and stopping", signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    if reload is not None:  # SIGHUP: load the model again beside the serving one (hot-swap)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: reload())


def start_reloader(settings: Settings, pipeline: Pipeline, seen: Fingerprint) -> ModelReloader:
    """The hot-swap's watcher: reloads MODSTREAM_MODEL_DIR on SIGHUP or when it changes
    from ``seen`` (the artifact as it was before the serving model was loaded)."""
    return ModelReloader(
        settings.model_dir,
        pipeline.swap,
        pipeline.model.version,
        artifact_loader(settings),
        lambda model: make_policy(settings, model),
        interval_s=settings.model_watch_interval_seconds,
        seen=seen,
    ).start()


def install_startup_signal_handlers(wait: StartupWait, reload: Callable[[], None]) -> None:
    """Before the worker runs, SIGTERM or SIGINT ends the start-up (model loading or a
    wait), and SIGHUP asks for the model's reload (``reload``: served once the hot-swap's
    watcher runs): its default action would end the process, and a deploy that sends it to
    every pod would kill the ones still starting."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if wait.stopped:
            raise KeyboardInterrupt
        log.info("signal %d during start-up: stopping", signum)
        wait.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reload())


class ReloadRequests:
    """SIGHUPs (reload the model): to the hot-swap's watcher once it runs, and remembered
    until then, so that one sent while the worker starts is not lost."""

    def __init__(self) -> None:
        self._reloader: ModelReloader | None = None
        self._asked = threading.Event()

    def __call__(self) -> None:
        if self._reloader is not None:
            self._reloader.request()
            return
        log.info("SIGHUP during start-up: the model is reloaded once the worker runs")
        self._asked.set()

    def attach(self, reloader: ModelReloader) -> None:
        self._reloader = reloader
        if self._asked.is_set():
            reloader.request()


class RestartsInPlace:
    """Whether a worker whose exactly-once transaction could not be aborted may start again
    in place, with new Kafka and Redis clients and the loaded model.

    An abort fails when the producer was fenced, or when the broker aborted a transaction
    that stayed open past its timeout (a long sink outage) and kafka-python's recovery
    ended it under the worker (see :meth:`Transactions.abort`). A new producer with the same
    transactional id carries on from the committed offsets, as Kafka Streams recreates its
    producer on a fence, without reloading the model or waiting out an orchestrator's
    restart back-off. A second failure within ``min_gap_s`` of the last restart is taken
    for what a fence usually means, another instance with the same transactional id, and
    the process stops instead of fencing it back at once."""

    def __init__(self, min_gap_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._min_gap = min_gap_s
        self._clock = clock
        self._last: float | None = None

    def allow(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._min_gap:
            return False
        self._last = now
        return True


def run(settings: Settings, model: Classifier | None = None) -> int:
    """The ``modstream run`` command. Returns the process exit code.

    The health server starts first, so that while the model loads and Redis or Kafka do not
    answer yet the process is alive and unready instead of crash-looping."""
    metrics.init_labels()
    probes = Probes(stale_after_s=60.0 + settings.sink_timeout_seconds)
    wait = StartupWait(settings.startup_timeout_seconds)
    restarts = RestartsInPlace()
    with ExitStack() as stack:
        if settings.metrics_port:
            server = HealthServer(
                settings.metrics_host,
                settings.metrics_port,
                probes.alive,
                probes.ready,
                mode="live",
            ).start()
            stack.callback(server.close)
            log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.port)
        reloader: ModelReloader | None = None
        reloads = ReloadRequests()
        install_startup_signal_handlers(wait, reloads)
        before_load = fingerprint(settings.model_dir)  # a deploy from here on is a change
        model = model or load_model(settings)
        metrics.MODEL_INFO.info({"version": model.version, "dir": str(settings.model_dir)})
        pipeline = make_pipeline(settings, model)
        while True:
            # The Kafka and Redis clients live for one worker; the model, its hot-swap
            # watcher and the health server for the process.
            with ExitStack() as clients:
                try:
                    worker = build_worker(settings, model, clients, pipeline=pipeline, wait=wait)
                except StartupInterruptedError:
                    log.info("stopped during start-up")
                    return 0
                if reloader is None:
                    reloader = start_reloader(settings, pipeline, before_load)
                    stack.callback(reloader.stop)
                    reloads.attach(reloader)
                probes.attach(worker)
                install_signal_handlers(worker, reloader.request)
                if wait.stopped:  # a signal came while the last client connected
                    worker.request_stop()
                log.info(
                    "consuming %s as group %s -> %s, dead letters -> %s",
                    settings.input_topic,
                    settings.group_id,
                    settings.output_topic,
                    settings.dlq_topic,
                )
                try:
                    worker.run()
                except ModelBrokenError as exc:
                    log.error("stopping: %s (what was acknowledged is committed)", exc)
                    return 4
                except TransactionAbortError as exc:
                    if worker.stopping or not restarts.allow():
                        raise
                    log.error(
                        "%s; starting again in place with new Kafka and Redis clients, from "
                        "the committed offsets (the broker has aborted or will abort the "
                        "open transaction)",
                        exc,
                    )
                    install_startup_signal_handlers(wait, reloads)
                    continue
            break
    log.info("stopped cleanly")
    return 0
