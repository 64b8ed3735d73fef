"""The ``modstream replay`` command: the live worker's loop over a bounded input.

It builds the same :class:`~worker.loop.Worker` as ``run`` (same decoding, batching, model,
policy and sinks, through :func:`worker.app.build_worker`), with three differences:

- the input is a :class:`~worker.replay.BoundedConsumer` over a time window: no consumer
  group, so the live group's offsets are never touched; progress goes to a resume file,
  with the models and outputs a resume must repeat; it reads committed records only, and
  has no reset policy, so a position retention removed is never jumped past silently;
- the sinks write to a replay topic and a replay key prefix unless ``--overwrite-live``
  is given, and every verdict carries ``replay_id``;
- it ends: once every record of the window is committed it writes a summary (counts by
  action, dead letters, time) to stdout and to a JSON file, and, with ``--compare-with``,
  the shadow comparison report.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from models.base import Classifier
from worker import metrics
from worker.app import build_worker, install_signal_handlers, load_model, make_pipeline, make_policy
from worker.config import ConfigError, Settings
from worker.errors import StartupError
from worker.health import HealthServer
from worker.kafka_client import make_consumer
from worker.pipeline import Pipeline
from worker.privacy import Pseudonymiser
from worker.replay import (
    LOST_TO_RETENTION,
    OUT_OF_WINDOW,
    BoundedConsumer,
    ReplayConfig,
    ReplayState,
    Tally,
    TallyingDeadLetters,
    TallySink,
    plan_spans,
)
from worker.schema import Action
from worker.shadow import ShadowLog, ShadowPipeline
from worker.stages import ModelBrokenError

log = logging.getLogger(__name__)

# Stopped before the end: rerun with the same --replay-id to resume. sysexits' EX_TEMPFAIL
# ("try again"), apart from 1, which an error the replay did not expect exits with.
EXIT_INTERRUPTED = 75
DEFAULT_LATENESS_MS = 60_000


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    from_ms: int | None
    to_ms: int | None
    topic: str | None = None
    output_topic: str | None = None
    redis_key_prefix: str | None = None
    model_dir: Path | None = None
    rate: float | None = None
    replay_id: str | None = None
    state_dir: Path = Path("replays")
    overwrite_live: bool = False
    compare_with: Path | None = None
    summary_path: Path | None = None
    progress: bool | None = None  # None: a bar when stderr is a terminal
    lateness_ms: int = DEFAULT_LATENESS_MS  # records stamped in the window, written this late


def new_replay_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def replay_settings(settings: Settings, opts: ReplayOptions, replay_id: str) -> Settings:
    """The settings the replay's worker runs with: its input topic, its own output topic,
    key prefix and dead-letter topic (the live ones only with ``overwrite_live``)."""
    live = opts.overwrite_live
    update: dict[str, Any] = {
        "input_topic": opts.topic or settings.input_topic,
        "output_topic": opts.output_topic
        or (settings.output_topic if live else f"{settings.output_topic}.replay"),
        "redis_key_prefix": opts.redis_key_prefix
        or (
            settings.redis_key_prefix if live else f"{settings.redis_key_prefix}replay:{replay_id}:"
        ),
        "dlq_topic": settings.dlq_topic if live else f"{settings.dlq_topic}.replay",
    }
    if opts.model_dir is not None:
        update["model_dir"] = opts.model_dir
    target = settings.model_copy(update=update)
    if not live and (
        target.output_topic == settings.output_topic
        or target.redis_key_prefix == settings.redis_key_prefix
    ):
        raise ConfigError(
            "a replay writes to the live output topic or key prefix only with --overwrite-live"
        )
    if target.output_topic in (target.input_topic, target.dlq_topic):
        raise ConfigError("the replay's output topic must differ from its input and DLQ topics")
    return target


def replay_source(target: Settings) -> KafkaConsumer:
    """The replay's Kafka consumer: no group; committed records only, as the exactly-once
    worker reads them (and the end offsets are then the last stable offset, so a span never
    ends inside an open transaction); and no reset policy, so a position that retention
    removed raises, and the :class:`BoundedConsumer` goes on from the log start counting
    the loss, where the live worker's "latest" would end the replay, "earliest" hide it."""
    return make_consumer(
        target,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        isolation_level="read_committed",
    )


def replay_config(
    target: Settings, opts: ReplayOptions, model: Classifier, candidate: Classifier | None
) -> ReplayConfig:
    """What this run scores with and writes to: recorded at the first start, then held."""
    return ReplayConfig(
        model_version=model.version,
        candidate_version=None if candidate is None else candidate.version,
        output_topic=target.output_topic,
        redis_key_prefix=target.redis_key_prefix,
        dead_letter_topic=target.dlq_topic,
        overwrite_live=opts.overwrite_live,
        lateness_ms=opts.lateness_ms,
    )


def _state(
    source: Any,
    target: Settings,
    opts: ReplayOptions,
    rid: str,
    path: Path,
    config: ReplayConfig,
) -> ReplayState:
    """The saved state of replay ``rid`` (resume), or a new plan fixed now."""
    state = ReplayState.load(path)
    if state is None:
        try:
            spans = plan_spans(
                source, target.input_topic, opts.from_ms, opts.to_ms, opts.lateness_ms
            )
        except LookupError as exc:
            raise StartupError(f"{exc} (MODSTREAM_INPUT_TOPIC or --topic)") from exc
        state = ReplayState(rid, target.input_topic, opts.from_ms, opts.to_ms, spans, config=config)
        state.save(path)
        return state
    asked = (target.input_topic, opts.from_ms, opts.to_ms)
    if asked != (state.topic, state.from_ms, state.to_ms):
        raise ConfigError(
            f"replay {rid} is of topic {state.topic} from {state.from_ms} to {state.to_ms}: "
            "resume it with the same --topic, --from and --to, or start a new --replay-id"
        )
    _check_config(state.config, config, rid, path)
    log.info("resuming replay %s: %d of %d records done", rid, state.done, state.total)
    return state


def _check_config(saved: ReplayConfig | None, asked: ReplayConfig, rid: str, path: Path) -> None:
    """A resume scores with the same models and writes to the same places, or not at all."""
    if saved is None:
        raise ConfigError(
            f"replay {rid}: {path} does not record the models and outputs it was started "
            "with (an older modstream wrote it), so resuming could mix verdicts: "
            "start a new --replay-id"
        )
    differ = saved.differences(asked)
    if differ:
        raise ConfigError(
            f"replay {rid} was started otherwise ({'; '.join(differ)}): resume it with the same "
            "--model, --compare-with, --output-topic, --redis-key-prefix, --overwrite-live, "
            "--lateness and MODSTREAM_* topics and prefix, or start a new --replay-id"
        )


def _pipeline(
    target: Settings, model: Classifier, rid: str, candidate: Classifier | None, run_dir: Path
) -> Pipeline:
    if candidate is None:
        return make_pipeline(target, model, replay_id=rid)
    return ShadowPipeline(
        model,
        make_policy(target, model),
        Pseudonymiser(target.pseudonym_key.get_secret_value().encode()),
        candidate=candidate,
        candidate_policy=make_policy(target, candidate),
        shadow_log=ShadowLog(run_dir / "shadow.jsonl"),
        store_text=target.store_text,
        replay_id=rid,
    )


def _progress(state: ReplayState, enabled: bool | None) -> Callable[[], None]:
    """A progress bar (records done, rate, time left) on its own thread; returns stop()."""
    from tqdm import tqdm

    stop = threading.Event()
    bar = tqdm(
        total=state.total,
        initial=state.done,
        unit="rec",
        desc="replay",
        disable=None if enabled is None else not enabled,  # None: only on a terminal
    )

    def update() -> None:
        while not stop.wait(0.5):
            bar.update(state.done - bar.n)
        bar.update(state.done - bar.n)
        bar.close()

    thread = threading.Thread(target=update, name="progress", daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(2.0)

    return close


def _ms_text(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def summary(state: ReplayState, target: Settings, model: Classifier) -> dict[str, Any]:
    counts = state.counts
    actions = {a.value: counts.get(a.value, 0) for a in Action}
    letters = {
        k.split(":", 1)[1]: n for k, n in sorted(counts.items()) if k.startswith("dead_letter:")
    }
    verdicts = sum(actions.values())
    return {
        "replay_id": state.replay_id,
        "topic": state.topic,
        "from": _ms_text(state.from_ms),
        "to": _ms_text(state.to_ms),
        "lateness_seconds": None if state.config is None else state.config.lateness_ms / 1000,
        "partitions": {
            str(tp.partition): {"start": s.start, "end": s.end}
            for tp, s in sorted(state.spans.items())
        },
        "output_topic": target.output_topic,
        "redis_key_prefix": target.redis_key_prefix,
        "dead_letter_topic": target.dlq_topic,
        "model_version": model.version,
        "records": state.total,
        "verdicts": verdicts,
        "actions": actions,
        "dead_letters": letters,
        "out_of_window": counts.get(OUT_OF_WINDOW, 0),
        "lost_to_retention": counts.get(LOST_TO_RETENTION, 0),
        "seconds": round(state.seconds, 3),
        "records_per_second": round(state.total / state.seconds, 1) if state.seconds else None,
    }


def _need_matplotlib() -> None:
    """The report's PNG needs matplotlib: say so before hours of replay, not after."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise StartupError(
            "--compare-with writes a PNG with matplotlib: pip install 'modstream[train]'"
        ) from None


def _serve_metrics(settings: Settings, stack: ExitStack, alive: Callable[[], bool]) -> None:
    if not settings.metrics_port:
        return
    try:
        server = HealthServer(
            settings.metrics_host, settings.metrics_port, alive, alive, mode="replay"
        ).start()
    except OSError as exc:  # a live worker on this host holds the port: replay without
        log.warning("metrics not served on port %d: %s", settings.metrics_port, exc)
        return
    stack.callback(server.close)


def run_replay(
    settings: Settings,
    opts: ReplayOptions,
    *,
    model: Classifier | None = None,
    candidate: Classifier | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """The ``modstream replay`` command. Returns the process exit code."""
    if opts.compare_with is not None:
        _need_matplotlib()
    rid = opts.replay_id or new_replay_id()
    target = replay_settings(settings, opts, rid)
    run_dir = opts.state_dir / rid
    state_path = run_dir / "state.json"
    metrics.init_labels("replay")
    with ExitStack() as stack:
        model = model or load_model(target)
        if opts.compare_with is not None and candidate is None:
            candidate = load_model(target.model_copy(update={"model_dir": opts.compare_with}))
        metrics.MODEL_INFO.info({"version": model.version, "dir": str(target.model_dir)})
        source = replay_source(target)
        stack.callback(source.close)
        config = replay_config(target, opts, model, candidate)
        state = _state(source, target, opts, rid, state_path, config)
        tally = Tally()
        consumer = BoundedConsumer(source, state, state_path, tally, rate=opts.rate)
        worker = build_worker(
            target,
            model,
            stack,
            consumer=consumer,
            pipeline=_pipeline(target, model, rid, candidate, run_dir),
            extra_sinks=(TallySink(tally),),
            wrap_dead_letters=lambda sink: TallyingDeadLetters(sink, tally),
        )
        _serve_metrics(target, stack, lambda: worker.alive(60.0 + target.sink_timeout_seconds))
        install_signal_handlers(worker)
        log.info(
            "replay %s: %s %s..%s (%d records) -> %s, redis %s*",
            rid,
            state.topic,
            _ms_text(state.from_ms),
            _ms_text(state.to_ms),
            state.total,
            target.output_topic,
            target.redis_key_prefix,
        )
        stop_progress = _progress(state, opts.progress)
        started = time.monotonic()  # the replay's time: without start-up and model loading
        try:
            worker.run(input_ended=lambda: consumer.finished)
        except ModelBrokenError as exc:
            log.error("stopping: %s (resume with --replay-id %s)", exc, rid)
            return 4
        finally:
            stop_progress()
        state.seconds += time.monotonic() - started
        if worker.stopping or not consumer.finished:
            state.save(state_path)
            log.warning(
                "stopped at %d of %d records: resume with --replay-id %s",
                state.done,
                state.total,
                rid,
            )
            return EXIT_INTERRUPTED
        consumer.finish()
    return _report(state, target, model, candidate, opts, run_dir, out)


def _report(
    state: ReplayState,
    target: Settings,
    model: Classifier,
    candidate: Classifier | None,
    opts: ReplayOptions,
    run_dir: Path,
    out: Callable[[str], None],
) -> int:
    result = summary(state, target, model)
    path = opts.summary_path or run_dir / "summary.json"
    # First without the shadow section: a report that fails still leaves the summary, and
    # a rerun with the same --replay-id (nothing left to read) builds the report again.
    _write_summary(result, path)
    if candidate is not None:
        log.info("replay %s: summary in %s; building the shadow report", state.replay_id, path)
        from worker.shadow_report import build_report, write_report

        report = build_report(
            ShadowLog(run_dir / "shadow.jsonl").read(), model.version, candidate.version
        )
        paths = write_report(report, run_dir)
        result["shadow"] = {
            "candidate_model": candidate.version,
            "posts": report["posts"],
            "compared": report["compared"],
            "candidate_errors": report["candidate_errors"],
            "agreement": report["agreement"],
            "flips": report["flips"],
            "report": {k: str(p) for k, p in paths.items()},
        }
        _write_summary(result, path)
    out(json.dumps(result, indent=2))
    log.info("replay %s done; summary in %s", state.replay_id, path)
    return 0


def _write_summary(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
