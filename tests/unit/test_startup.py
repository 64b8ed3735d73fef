"""Start-up waits for a dependency that does not answer yet, with capped backoff, and still
fails at once on a wrong setting. Driven by an injected clock: nothing sleeps."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import REGISTRY

from tests.fakes import ManualClock
from worker import metrics
from worker.config import ConfigError, load_settings
from worker.errors import StartupError, UnavailableError
from worker.startup import StartupInterruptedError, StartupWait


class Dependency:
    """Unavailable for the first ``down_for`` calls, then answers."""

    def __init__(self, down_for: int, error: StartupError | None = None) -> None:
        self.calls = 0
        self.down_for = down_for
        self.error = error

    def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if self.calls <= self.down_for:
            raise UnavailableError("Redis at MODSTREAM_REDIS_URL=redis://h:1/0 does not answer")
        return "client"


class Pauses:
    """The injected pause: records each wait and moves the clock; stops when told to."""

    def __init__(self, clock: ManualClock, stop_after: int | None = None) -> None:
        self.clock = clock
        self.waits: list[float] = []
        self.stop_after = stop_after

    def __call__(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.clock.advance(seconds)
        return self.stop_after is not None and len(self.waits) >= self.stop_after


def sink_up(sink: str) -> float | None:
    return REGISTRY.get_sample_value("modstream_sink_up", {"sink": sink})


def test_an_unavailable_dependency_is_waited_for_with_capped_exponential_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    pauses = Pauses(clock)
    wait = StartupWait(backoff_s=(0.5, 3.0), clock=clock, pause=pauses)
    dependency = Dependency(down_for=5)
    metrics.SINK_UP.labels("redis").set(0)  # the registry is the process's: start from down
    assert wait.until_up(dependency, ("redis",)) == "client"
    assert dependency.calls == 6
    assert pauses.waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert sink_up("redis") == 1
    retries = [r.getMessage() for r in caplog.records if "waiting for a dependency" in r.message]
    assert len(retries) == 5 and all("MODSTREAM_REDIS_URL" in m for m in retries)


def test_the_sinks_of_a_dependency_read_down_while_it_is_waited_for() -> None:
    seen: list[float | None] = []
    clock = ManualClock()

    def pause(seconds: float) -> bool:
        seen.append(sink_up("kafka"))
        seen.append(sink_up("dead_letter"))
        clock.advance(seconds)
        return False

    wait = StartupWait(clock=clock, pause=pause)
    wait.until_up(Dependency(down_for=1), ("kafka", "dead_letter"))
    assert seen == [0, 0]
    assert sink_up("kafka") == 1 and sink_up("dead_letter") == 1


def test_a_wrong_setting_fails_at_once_without_waiting() -> None:
    pauses = Pauses(ManualClock())
    refused = StartupError("Redis at MODSTREAM_REDIS_URL=... refused the login")
    dependency = Dependency(down_for=0, error=refused)
    with pytest.raises(StartupError) as info:
        StartupWait(pause=pauses).until_up(dependency)
    assert info.value is refused
    assert dependency.calls == 1 and pauses.waits == []


def test_the_wait_gives_up_after_the_startup_timeout_naming_the_setting() -> None:
    clock = ManualClock()
    pauses = Pauses(clock)
    wait = StartupWait(10.0, backoff_s=(1.0, 4.0), clock=clock, pause=pauses)
    with pytest.raises(StartupError) as info:
        wait.until_up(Dependency(down_for=1000))
    assert not isinstance(info.value, UnavailableError)  # ends the process: exit status 3
    message = str(info.value)
    assert "MODSTREAM_STARTUP_TIMEOUT_SECONDS=10" in message
    assert "MODSTREAM_REDIS_URL" in message
    assert sum(pauses.waits) == pytest.approx(10.0)  # the last wait is cut to the deadline
    assert pauses.waits == [1.0, 2.0, 4.0, 3.0]


def test_a_stop_signal_ends_the_wait() -> None:
    clock = ManualClock()
    pauses = Pauses(clock, stop_after=2)
    wait = StartupWait(clock=clock, pause=pauses)
    dependency = Dependency(down_for=1000)
    with pytest.raises(StartupInterruptedError):
        wait.until_up(dependency)
    assert dependency.calls == 2


def test_a_stop_before_the_first_attempt_connects_to_nothing() -> None:
    wait = StartupWait(pause=Pauses(ManualClock()))
    wait.stop()
    dependency = Dependency(down_for=0)
    with pytest.raises(StartupInterruptedError):
        wait.until_up(dependency)
    assert dependency.calls == 0


def test_a_metrics_port_in_use_is_a_start_up_error_naming_the_setting() -> None:
    from worker.health import HealthServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match="MODSTREAM_METRICS_PORT"):
            HealthServer("127.0.0.1", port, lambda: True, lambda: True, mode="live")


def test_policy_settings_the_model_cannot_take_are_a_config_error_naming_them() -> None:
    from tests.fakes import FakeModel
    from worker.app import make_policy

    model = FakeModel()  # block_fake 0.9
    settings = load_settings(policy_review_fake=0.95)
    with pytest.raises(ConfigError, match="MODSTREAM_POLICY_REVIEW_FAKE"):
        make_policy(settings, model)
