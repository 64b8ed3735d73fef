"""The ``modstream`` command: run, replay, produce, demo, train, evaluate."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from worker.config import (
    ConfigError,
    Settings,
    describe_settings,
    load_settings,
    unknown_variables,
)
from worker.errors import StartupError

SETTINGS_HELP = "settings (environment variables):\n" + describe_settings()


log = logging.getLogger("modstream")


def _settings(args: argparse.Namespace) -> Settings:
    """The settings, with logging set up at their level and a warning for each thing in
    them an operator would not want unnoticed: a misspelt variable (ignored, so its setting
    keeps its default) and, for the commands that pseudonymise, the development key."""
    settings = load_settings(args.env_file)
    _logging(settings.log_level)
    for problem in unknown_variables():
        log.warning("%s; it is ignored", problem)
    if args.command in ("run", "replay") and settings.development_key:
        log.warning(
            "MODSTREAM_PSEUDONYM_KEY is the development default: anyone with the source can "
            "reverse the author pseudonyms by hashing candidate ids; set a secret key"
        )
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from worker.app import run

    settings = _settings(args)
    return run(settings)


def cmd_replay(args: argparse.Namespace) -> int:
    from worker.replay import parse_time
    from worker.replay_run import ReplayOptions, run_replay

    settings = _settings(args)
    try:
        window = [None if t is None else parse_time(t) for t in (args.from_time, args.to_time)]
    except ValueError as exc:
        raise ConfigError(f"--from/--to: {exc}") from None
    if window[0] is not None and window[1] is not None and window[0] >= window[1]:
        raise ConfigError("--from must be before --to")
    if args.rate is not None and args.rate <= 0:
        raise ConfigError("--rate must be positive")
    if not 0 <= args.lateness < float("inf"):  # also refuses nan
        raise ConfigError("--lateness must be a number of seconds, 0 or more")
    opts = ReplayOptions(
        from_ms=window[0],
        to_ms=window[1],
        topic=args.topic,
        output_topic=args.output_topic,
        redis_key_prefix=args.redis_key_prefix,
        model_dir=args.model,
        rate=args.rate,
        replay_id=args.replay_id,
        state_dir=args.state_dir,
        overwrite_live=args.overwrite_live,
        compare_with=args.compare_with,
        summary_path=args.summary,
        progress=False if args.no_progress else None,
        lateness_ms=round(args.lateness * 1000),
    )
    return run_replay(settings, opts)


def add_replay_arguments(rep: argparse.ArgumentParser) -> None:
    rep.add_argument(
        "--from",
        dest="from_time",
        metavar="TIME",
        required=True,
        help="start of the window, by record timestamp (RFC 3339 or epoch ms; inclusive)",
    )
    rep.add_argument(
        "--to",
        dest="to_time",
        metavar="TIME",
        help="end of the window (exclusive; default: the end of the topic when it starts)",
    )
    rep.add_argument(
        "--lateness",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="also score records stamped before --to but written up to this long after "
        "records stamped at --to (timestamps out of order; default: 60; 0: none)",
    )
    rep.add_argument("--topic", help="topic to replay (default: MODSTREAM_INPUT_TOPIC)")
    rep.add_argument(
        "--output-topic", help="verdict topic (default: MODSTREAM_OUTPUT_TOPIC + '.replay')"
    )
    rep.add_argument(
        "--redis-key-prefix",
        help="verdict key prefix (default: MODSTREAM_REDIS_KEY_PREFIX + 'replay:ID:')",
    )
    rep.add_argument("--model", type=Path, help="model artifact (default: MODSTREAM_MODEL_DIR)")
    rep.add_argument("--rate", type=float, help="most records per second (default: no limit)")
    rep.add_argument(
        "--replay-id", help="name of this replay; an unfinished one with this id resumes"
    )
    rep.add_argument(
        "--state-dir",
        type=Path,
        default=Path("replays"),
        help="where resume files, summaries and reports go (default: ./replays)",
    )
    rep.add_argument(
        "--overwrite-live",
        action="store_true",
        help="write to the live output topic, key prefix and dead-letter topic",
    )
    rep.add_argument(
        "--compare-with",
        type=Path,
        help="candidate model artifact: score each post with it too, write an agreement report",
    )
    rep.add_argument(
        "--summary", type=Path, help="summary JSON (default: STATE_DIR/ID/summary.json)"
    )
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_produce(args: argparse.Namespace) -> int:
    from worker.produce import ProduceError, file_events, produce, synthetic_events

    if args.file is not None and not args.file.is_file():
        raise ConfigError(f"--file {args.file}: no such file")
    if args.count is not None and args.count < 0:
        raise ConfigError("--count must not be negative")
    if args.rate is not None and args.rate <= 0:
        raise ConfigError("--rate must be positive (leave it out to send as fast as possible)")
    settings = _settings(args)
    events = file_events(args.file) if args.file else synthetic_events(args.seed)
    count = args.count if args.count is not None else (None if args.file else 1000)
    topic = args.topic or settings.input_topic
    try:
        sent = produce(settings, events, count=count, rate=args.rate, topic=topic)
    except ProduceError as exc:
        print(f"modstream: {exc}", file=sys.stderr)
        return 1
    print(f"sent {sent} events to {topic}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.demo import run_demo

    _logging("WARNING")
    # A fresh demo topic has no metadata for a moment; kafka-python warns about it.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    return run_demo(args.env_file, count=args.count, rate=args.rate)


def cmd_train(args: argparse.Namespace) -> int:
    from training.cli import train_command

    _logging("INFO")
    return train_command(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.cli import evaluate_command

    _logging("INFO")
    return evaluate_command(args)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="modstream",
        description="Streaming content moderation: Kafka in, verdicts to Redis and Kafka out.",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--env-file", type=Path, help="read settings from this file as well")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the worker",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser(
        "replay",
        help="re-moderate a time window of a topic (bounded; no consumer group)",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_replay_arguments(rep)
    rep.set_defaults(func=cmd_replay)

    prod = sub.add_parser("produce", help="send post events to the input topic")
    prod.add_argument("--file", type=Path, help="JSON Lines file of events (else synthetic)")
    prod.add_argument("--count", type=int, help="events to send (synthetic default: 1000)")
    prod.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    prod.add_argument("--topic", help="topic (default: MODSTREAM_INPUT_TOPIC)")
    prod.add_argument("--seed", type=int, default=7, help="seed of the synthetic stream")
    prod.set_defaults(func=cmd_produce)

    demo = sub.add_parser("demo", help="start a local stack if needed and show live verdicts")
    demo.add_argument("--count", type=int, default=300, help="posts to stream")
    demo.add_argument("--rate", type=float, default=40.0, help="posts per second")
    demo.set_defaults(func=cmd_demo)

    from training.cli import add_evaluate_arguments, add_train_arguments

    train = sub.add_parser("train", help="train the classifier and write an artifact")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)
    ev = sub.add_parser("evaluate", help="evaluate an artifact on labelled data")
    add_evaluate_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"modstream: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"modstream: cannot start: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
