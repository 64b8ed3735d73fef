"""Sinks: where verdicts and dead letters go.

Every sink method is called from the writer stage's thread only (one thread per worker),
never from the main loop, so a slow or hung sink holds back the writer, not polling.

- :meth:`Sink.write_batch` blocks until the destination acknowledged every item (bounded
  by ``MODSTREAM_SINK_TIMEOUT_SECONDS``), or raises :class:`SinkError`
  (:class:`PermanentSinkError` when a record is refused for good). Writing the same
  batch again is harmless (Redis overwrites per ``post_id``; a topic gets a duplicate,
  which at-least-once delivery allows).
- :meth:`SendingSink.send_batch` returns at once with an :class:`Acknowledgement`, so the
  writer hands the records to the Kafka producer, writes Redis, then waits for the Kafka
  acks (the wait flushes the producer: the records go in one request).
- ``close`` is called once, by the owner, after the writer has stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar, runtime_checkable

T_contra = TypeVar("T_contra", contravariant=True)


class SinkError(RuntimeError):
    """A batch was not (fully) acknowledged; the caller retries it, offsets stay put."""


class PermanentSinkError(SinkError):
    """The destination refused a record itself (too large, malformed), not the connection
    or the moment: sending it again fails the same way, so the caller must not retry it."""


class Sink(Protocol[T_contra]):
    name: str

    def write_batch(self, items: Sequence[T_contra]) -> None: ...

    def close(self) -> None: ...


class Acknowledgement(Protocol):
    def wait(self) -> None:
        """Block until every item sent is acknowledged; raise :class:`SinkError` if not."""


@runtime_checkable
class SendingSink(Sink[T_contra], Protocol[T_contra]):
    def send_batch(self, items: Sequence[T_contra]) -> Acknowledgement: ...
