"""Waiting at start-up for Redis and Kafka to answer.

A dependency that does not answer yet (:class:`worker.errors.UnavailableError`: nothing
listens, a timeout, a server still loading) is tried again with capped exponential backoff,
each retry logged with the setting to check (never a secret), while ``/healthz`` says the
process is alive and ``/readyz`` that it is not ready. A refused login or a wrong setting is
a plain :class:`worker.errors.StartupError` and ends the process at once (exit status 3), as
does waiting past ``MODSTREAM_STARTUP_TIMEOUT_SECONDS`` when it is set. A stop signal ends
the wait (:class:`StartupInterruptedError`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from worker import metrics
from worker.errors import StartupError, UnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")


class StartupInterruptedError(Exception):
    """A stop was asked for while start-up was waiting for a dependency."""


class StartupWait:
    """Calls ``connect`` until it returns, waiting between attempts while it raises
    :class:`UnavailableError`. Runs on the main thread; :meth:`stop` may be called from a
    signal handler.

    ``timeout_s``: give up (a :class:`StartupError`) once this long has passed since the
    first failed attempt of one dependency; 0 waits for ever. ``pause``: waits up to the
    given seconds and returns True if a stop was asked for meanwhile (an injected clock and
    pause test it without sleeping)."""

    def __init__(
        self,
        timeout_s: float = 0.0,
        *,
        backoff_s: tuple[float, float] = (0.5, 10.0),
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], bool] | None = None,
    ) -> None:
        self._timeout = timeout_s
        self._backoff = backoff_s
        self._clock = clock
        self._stopped = threading.Event()
        self._pause = pause or self._stopped.wait

    def stop(self) -> None:
        """Ends the current or next wait (from a signal handler: only sets a flag)."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def until_up(self, connect: Callable[[], T], sinks: Sequence[str] = ()) -> T:
        """``connect()``'s result once it succeeds. ``sinks``: the ``modstream_sink_up``
        labels that read 0 while this dependency does not answer."""
        started: float | None = None
        attempt = 0
        while True:
            if self.stopped:
                raise StartupInterruptedError
            try:
                result = connect()
            except UnavailableError as exc:
                now = self._clock()
                started = now if started is None else started
                attempt += 1
                self._set_up(sinks, 0)
                delay = self._next_delay(attempt, exc, now - started)
                log.warning(
                    "waiting for a dependency: %s; attempt %d failed, %.0fs so far, next in %.1fs",
                    exc,
                    attempt,
                    now - started,
                    delay,
                )
                if self._pause(delay):
                    raise StartupInterruptedError from exc
                continue
            self._set_up(sinks, 1)
            if attempt:
                log.info("the dependency answers after %d failed attempts", attempt)
            return result

    def _next_delay(self, attempt: int, exc: UnavailableError, waited: float) -> float:
        first, longest = self._backoff
        delay: float = min(longest, first * 2.0 ** (attempt - 1))
        if not self._timeout:
            return delay
        if waited >= self._timeout:
            raise StartupError(
                f"{exc}; gave up after waiting {waited:.0f}s "
                f"(MODSTREAM_STARTUP_TIMEOUT_SECONDS={self._timeout:g})"
            ) from exc
        return min(delay, self._timeout - waited)

    @staticmethod
    def _set_up(sinks: Sequence[str], value: int) -> None:
        for sink in sinks:
            metrics.SINK_UP.labels(sink).set(value)
