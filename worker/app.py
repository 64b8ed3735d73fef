"""Wiring and lifecycle: build every part from the settings, run the loop, tear down."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType

from models.base import Classifier
from worker import metrics
from worker.batcher import BatchLimits, MicroBatcher, Size
from worker.config import Settings
from worker.consumer import Consumer, InputConsumer
from worker.errors import StartupError
from worker.flow import Prepared
from worker.health import HealthServer
from worker.kafka_client import make_consumer, make_producer
from worker.loop import LoopConfig, Worker
from worker.pipeline import Pipeline
from worker.policy import Policy
from worker.privacy import Pseudonymiser
from worker.schema import DeadLetter, Verdict
from worker.sinks import Sink
from worker.sinks.kafka import DeadLetterSink, KafkaVerdictSink
from worker.sinks.redis import RedisVerdictSink, connect_redis
from worker.stages import ModelBrokenError

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
        )
    except (ArtifactError, RuntimeError) as exc:
        raise StartupError(f"model at MODSTREAM_MODEL_DIR={settings.model_dir}: {exc}") from exc


def make_policy(settings: Settings, model: Classifier) -> Policy:
    return Policy.from_mapping(
        dict(model.policy),
        block_fake=settings.policy_block_fake,
        review_fake=settings.policy_review_fake,
        review_negative=settings.policy_review_negative,
    )


def loop_config(settings: Settings) -> LoopConfig:
    return LoopConfig(
        poll_timeout_ms=settings.poll_timeout_ms,
        max_poll_records=settings.max_poll_records,
        max_pending=settings.max_pending_records,
        max_event_bytes=settings.max_event_bytes,
        shutdown_grace_s=settings.shutdown_grace_seconds,
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
) -> Worker:
    """Connect to Redis and Kafka and assemble the loop; every resource joins ``stack``.
    A replay passes its bounded ``consumer``, its ``pipeline`` and sinks of its own."""
    client = connect_redis(settings)  # pings; a refusal names the setting, never the secret
    redis_sink = RedisVerdictSink(client, settings.redis_key_prefix, settings.redis_ttl_seconds)
    stack.callback(redis_sink.close)
    live: InputConsumer | None = None
    try:
        producer = make_producer(settings)
        if consumer is None:
            consumer = live = InputConsumer(make_consumer(settings), settings.input_topic)
    except StartupError:
        raise
    except Exception as exc:
        raise StartupError(
            f"Kafka at MODSTREAM_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers} "
            f"is not usable: {exc!r}"
        ) from exc
    # Bounded: a writer stuck on a dead broker must not hold the process at exit.
    stack.callback(producer.close, timeout=5)
    if live is not None:
        stack.callback(live.close)  # closes first: leaves the group before the producer goes
    timeout = settings.sink_timeout_seconds
    pipeline = pipeline or make_pipeline(settings, model)
    limits = BatchLimits(
        settings.batch_max_size, settings.batch_max_wait_ms / 1000.0, settings.batch_token_budget
    )
    batcher: MicroBatcher[Prepared] = MicroBatcher(
        limits, lambda p: Size(p.encoded.rows, p.encoded.tokens)
    )
    return Worker(
        consumer,
        batcher,
        pipeline,
        [redis_sink, KafkaVerdictSink(producer, settings.output_topic, timeout), *extra_sinks],
        wrap_dead_letters(DeadLetterSink(producer, settings.dlq_topic, timeout)),
        loop_config(settings),
    )


def install_signal_handlers(worker: Worker) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if worker.stopping:
            log.warning("second signal %d: abandoning the batch in hand", signum)
            raise KeyboardInterrupt
        log.info("signal %d: draining and stopping", signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run(settings: Settings, model: Classifier | None = None) -> int:
    """The ``modstream run`` command. Returns the process exit code."""
    metrics.init_labels()
    with ExitStack() as stack:
        model = model or load_model(settings)
        metrics.MODEL_INFO.info({"version": model.version, "dir": str(settings.model_dir)})
        worker = build_worker(settings, model, stack)
        if settings.metrics_port:
            stale_after = 60.0 + settings.sink_timeout_seconds
            server = HealthServer(
                settings.metrics_host,
                settings.metrics_port,
                alive=lambda: worker.alive(stale_after),
                ready=lambda: worker.ready(stale_after),
                mode="live",
            ).start()
            stack.callback(server.close)
            log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.port)
        install_signal_handlers(worker)
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
    log.info("stopped cleanly")
    return 0
