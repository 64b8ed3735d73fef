"""The ``modstream`` command: run, produce, demo, train, evaluate."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from worker.config import ConfigError, Settings, describe_settings, load_settings
from worker.errors import StartupError

SETTINGS_HELP = "settings (environment variables):\n" + describe_settings()


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.env_file)


def cmd_run(args: argparse.Namespace) -> int:
    from worker.app import run

    settings = _settings(args)
    _logging(settings.log_level)
    return run(settings)


def cmd_produce(args: argparse.Namespace) -> int:
    from worker.produce import file_events, produce, synthetic_events

    settings = _settings(args)
    _logging(settings.log_level)
    events = file_events(args.file) if args.file else synthetic_events(args.seed)
    count = args.count if args.count is not None else (None if args.file else 1000)
    sent = produce(settings, events, count=count, rate=args.rate, topic=args.topic)
    print(f"sent {sent} events to {args.topic or settings.input_topic}")
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
