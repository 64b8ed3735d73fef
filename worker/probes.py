"""What ``/healthz`` and ``/readyz`` answer over the life of a ``modstream run`` process.

- Starting (loading the model, waiting for Redis and Kafka to answer): alive, not ready.
- Running: alive while the main loop keeps stepping (a sink or broker outage does not stop
  it: the writer retries on its own thread while the loop polls with its partitions
  paused); ready while alive, not stopping, and every sink acknowledges its writes.
- Stopping, or stopped by a broken model: not ready (and no longer alive once a stage
  failed).

Liveness is for restarting a wedged process, readiness for an operator's view and for
rolling updates: an outage of a dependency makes the worker unready, never dead.
"""

from __future__ import annotations

from worker.loop import Worker
from worker.stages import WriterStage


class Probes:
    """Called from the health server's threads; :meth:`attach` from the main thread once
    the worker is built."""

    def __init__(self, stale_after_s: float) -> None:
        self._stale_after = stale_after_s
        self._worker: Worker | None = None
        self._writer: WriterStage | None = None

    def attach(self, worker: Worker) -> None:
        self._writer = next(s for s in worker.stages.stages if isinstance(s, WriterStage))
        self._worker = worker

    def alive(self) -> bool:
        worker = self._worker
        return True if worker is None else worker.alive(self._stale_after)

    def ready(self) -> bool:
        worker, writer = self._worker, self._writer
        if worker is None or writer is None:
            return False
        return worker.ready(self._stale_after) and not writer.down
