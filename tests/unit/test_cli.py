"""The ``modstream`` command's own checks: arguments refused before anything connects, and
the warnings an operator must not miss."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.fakes import FakeModel
from worker.cli import _settings, main
from worker.produce import ProduceError, file_events


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kafka at a port nothing listens on: a command that connected would exit 3."""
    monkeypatch.setenv("MODSTREAM_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port()}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "/nonexistent/posts.jsonl"], "--file /nonexistent/posts.jsonl: no such file"),
        (["--count", "-5"], "--count must not be negative"),
        (["--rate", "0"], "--rate must be positive"),
        (["--rate", "-3"], "--rate must be positive"),
    ],
)
def test_produce_refuses_bad_arguments_before_connecting(
    no_broker: None, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["produce", *args]) == 2
    assert message in capsys.readouterr().err


def test_an_env_file_that_is_not_there_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["--env-file", str(tmp_path / "prod.env"), "produce", "--count", "0"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"), [("[1, 2]", "line 2: not a JSON object"), ("{oops", "line 2: not JSON")]
)
def test_a_file_line_that_is_no_event_names_its_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text('{"post_id": "a", "text": "fine"}\n' + line + "\n")
    events = file_events(path)
    assert next(events)["post_id"] == "a"
    with pytest.raises(ProduceError, match=message):
        next(events)


def _args(command: str) -> argparse.Namespace:
    return argparse.Namespace(env_file=None, command=command)


def test_a_misspelt_variable_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODSTREAM_BATCH_MAXSIZE", "3")
    with caplog.at_level(logging.WARNING, logger="modstream"):
        settings = _settings(_args("produce"))
    assert settings.batch_max_size != 3
    assert any(
        "MODSTREAM_BATCH_MAXSIZE: not a setting (did you mean MODSTREAM_BATCH_MAX_SIZE?)"
        in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("command", "warned"), [("run", True), ("replay", True), ("produce", False)]
)
def test_serving_with_the_development_key_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, command: str, warned: bool
) -> None:
    monkeypatch.delenv("MODSTREAM_PSEUDONYM_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="modstream"):
        _settings(_args(command))
    said = any("development default" in r.getMessage() for r in caplog.records)
    assert said is warned
    caplog.clear()
    monkeypatch.setenv("MODSTREAM_PSEUDONYM_KEY", "a-real-secret")
    with caplog.at_level(logging.WARNING, logger="modstream"):
        _settings(_args(command))
    assert not any("development default" in r.getMessage() for r in caplog.records)


def test_run_exits_3_once_a_redis_that_never_answers_outlasts_the_startup_timeout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README, "Failure behaviour": Redis down at start is waited for, bounded by
    MODSTREAM_STARTUP_TIMEOUT_SECONDS, then exit 3 naming the settings. The fake model
    stands in for the shipped one (its load takes seconds and is not what is tested)."""
    monkeypatch.setenv("MODSTREAM_REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    monkeypatch.setenv("MODSTREAM_STARTUP_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("MODSTREAM_METRICS_PORT", "0")  # no health server
    monkeypatch.setattr("worker.app.load_model", lambda settings: FakeModel())
    # run() installs its own handlers: give pytest's back afterwards.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    started = time.monotonic()
    try:
        code = main(["run"])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 3, err
    assert "MODSTREAM_REDIS_URL" in err and "MODSTREAM_STARTUP_TIMEOUT_SECONDS=1" in err, err
    assert took >= 1.0, f"gave up after {took:.1f}s, before the start-up timeout"
