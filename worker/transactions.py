"""Exactly-once mode: the verdicts, the dead letters and the offset commit in one transaction.

``MODSTREAM_PROCESSING_GUARANTEE=exactly-once`` gives the worker a transactional producer.
Every send of the writer stage goes into the open transaction, and the main thread ends it
at a *checkpoint barrier* (:meth:`worker.loop.Worker`): it pauses fetching, lets every
record in flight reach the sinks, then commits the consumed offsets with the transaction
(``send_offsets_to_transaction`` with the consumer's group metadata, so the broker fences a
member that lost its partitions: KIP-447) and opens the next one. At that moment the
records written in the transaction are exactly the records between the last committed
offsets and the new ones, which is what "exactly once" needs; a barrier is why the mode
costs some throughput (the pipeline empties once per ``MODSTREAM_COMMIT_INTERVAL_MS``).

A failed send, a failed commit or a rebalance aborts the transaction: the writes since the
last commit vanish for ``read_committed`` readers and the loop rewinds to the committed
offsets. An abort that fails (the producer was fenced, or the broker aborted a transaction
that stayed open past ``MODSTREAM_TRANSACTION_TIMEOUT_SECONDS`` in a long sink outage)
ends the worker, and ``modstream run`` starts it again with new clients. Redis is outside the
transaction; it stays correct because a verdict is overwritten per ``post_id``.

The writer holds :meth:`writing` while it sends and waits for acknowledgements, and the
main thread takes the same lock to commit or abort, so no send of a dropped batch can land
in the next transaction. kafka-python's transactional calls wait without a bound when the
broker is gone; each runs here on a helper thread with a deadline instead, and a whole
commit or abort (the lock included) may be given a deadline of its own (``within_s``): at
shutdown, what is left of the grace time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from kafka import TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from worker import metrics
from worker.checkpoint import Partition

log = logging.getLogger(__name__)

R = TypeVar("R")


class TransactionalProducer(Protocol):
    """The part of kafka-python's ``KafkaProducer`` a transaction uses."""

    def init_transactions(self) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any) -> None: ...
    def commit_transaction(self) -> None: ...
    def abort_transaction(self) -> None: ...


class Transactions:
    """The open transaction of one worker. Not re-entrant; see the module docstring."""

    def __init__(
        self,
        producer: TransactionalProducer,
        group_metadata: Callable[[], Any],
        timeout_s: float,
    ) -> None:
        self._producer = producer
        self._group_metadata = group_metadata
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self.broken = False  # a send failed: the open transaction can only be aborted

    def start(self) -> None:
        """Fence earlier instances with the same transactional id (their open transaction
        is aborted) and open the first transaction."""
        self._bounded(self._producer.init_transactions, "init_transactions")
        self._bounded(self._producer.begin_transaction, "begin_transaction")

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Held by the writer stage around one write attempt."""
        with self._lock:
            yield

    def send_failed(self) -> None:
        """The writer saw a Kafka send fail inside the transaction."""
        self.broken = True

    def group_metadata(self) -> Any:
        """Snapshot it *before* applying queued rebalances (see :meth:`Worker._eos_commit`)."""
        return self._group_metadata()

    def commit(
        self, offsets: dict[Partition, int], group_metadata: Any, within_s: float | None = None
    ) -> None:
        """Commit the open transaction with ``offsets`` (next offset to read per partition)
        and open the next one, all of it within ``within_s`` (None: each call within the
        timeout). Raises :class:`KafkaError` on failure: abort then."""
        deadline = _deadline(within_s)
        if self.broken:
            raise KafkaError("a send in this transaction failed")
        to_commit = {
            TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(off, "", -1)
            for tp, off in offsets.items()
        }
        with self._held(deadline, "commit"):
            if to_commit:
                self._bounded(
                    lambda: self._producer.send_offsets_to_transaction(to_commit, group_metadata),
                    "send_offsets_to_transaction",
                    deadline,
                )
            self._bounded(self._producer.commit_transaction, "commit_transaction", deadline)
            metrics.TRANSACTIONS.labels("committed").inc()
            self._bounded(self._producer.begin_transaction, "begin_transaction", deadline)

    def abort(self, within_s: float | None = None) -> None:
        """Abort the open transaction and open the next one, within ``within_s`` as
        :meth:`commit`. Raises :class:`KafkaError` when the abort fails (or the writer holds
        the transaction past the deadline): the worker must then start again with a new
        producer (the broker aborts the transaction when it times out, if it has not
        already).

        A failed abort is never followed by a new transaction on the same producer. The case
        that made it tempting: when the broker has aborted a transaction that stayed open past
        its timeout (a long sink outage), the next send fails with InvalidProducerEpoch and
        kafka-python bumps the producer's epoch (KIP-360), which ends the transaction
        client-side, so the abort fails ("Invalid transition ... READY to
        ABORTING_TRANSACTION") and a new transaction could begin. But kafka-python keeps the
        records of the dead transaction that were not yet acknowledged and drains them
        "under the new epoch", that is into the next transaction: a fault test found seven
        verdicts twice in one committed transaction that way. A new producer with the same
        transactional id fences the old one, so none of its records can land."""
        deadline = _deadline(within_s)
        with self._held(deadline, "abort"):
            self._bounded(self._producer.abort_transaction, "abort_transaction", deadline)
            self._bounded(self._producer.begin_transaction, "begin_transaction", deadline)
            metrics.TRANSACTIONS.labels("aborted").inc()
            self.broken = False

    def _left(self, deadline: float | None) -> float:
        """How long the next wait may take: the timeout, and no later than ``deadline``."""
        if deadline is None:
            return self._timeout
        return max(0.0, min(self._timeout, deadline - time.monotonic()))

    @contextmanager
    def _held(self, deadline: float | None, what: str) -> Iterator[None]:
        """The transaction's lock, waited for until ``deadline`` at most (the writer holds
        it while a write to a broker that does not answer runs into its sink timeout)."""
        if not self._lock.acquire(timeout=-1 if deadline is None else self._left(deadline)):
            raise KafkaTimeoutError(
                f"{what}: the writer still held the transaction at its deadline"
            )
        try:
            yield
        finally:
            self._lock.release()

    def _bounded(self, call: Callable[[], R], what: str, deadline: float | None = None) -> R:
        """Run ``call`` on a helper thread; :class:`KafkaTimeoutError` after the timeout or
        at ``deadline`` (the thread is left to finish on its own: it is a daemon)."""
        result: list[R] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                result.append(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                error.append(exc)

        thread = threading.Thread(target=target, name=f"txn-{what}", daemon=True)
        thread.start()
        wait = self._left(deadline)
        thread.join(wait)
        if thread.is_alive():
            raise KafkaTimeoutError(f"{what} did not finish within {wait:.1f}s")
        if error:
            raise error[0]
        return result[0]


def _deadline(within_s: float | None) -> float | None:
    return None if within_s is None else time.monotonic() + within_s
