"""A pure micro-batcher: no Kafka, no torch, no sleeping.

A batch closes when it is full (``max_size`` items), when the padded token cost of the
waiting items reaches ``token_budget`` (cost = items x longest item, because batches are
padded to their longest member), or when the oldest waiting item has waited ``max_wait_s``.
The clock is injected, so tests drive time by hand.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_size: int
    max_wait_s: float
    token_budget: int

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError("max_size must be at least 1")
        if self.max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        if self.token_budget < 1:
            raise ValueError("token_budget must be at least 1")


class MicroBatcher(Generic[T]):
    """Collects items and hands them out in batches that respect :class:`BatchLimits`."""

    def __init__(
        self,
        limits: BatchLimits,
        cost: Callable[[T], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._cost = cost
        self._clock = clock
        self._items: deque[tuple[T, int, float]] = deque()  # (item, cost, arrival time)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        self._items.append((item, max(1, self._cost(item)), self._clock()))

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.add(item)

    def time_left(self) -> float | None:
        """Seconds until the oldest item's wait runs out (0 when overdue), None when empty."""
        if not self._items:
            return None
        waited = self._clock() - self._items[0][2]
        return max(0.0, self._limits.max_wait_s - waited)

    def ready(self) -> bool:
        """True when a batch should be taken now."""
        if not self._items:
            return False
        if len(self._items) >= self._limits.max_size:
            return True
        left = self.time_left()
        if left is not None and left <= 1e-9:  # tolerate float rounding of clock sums
            return True
        longest = max(cost for _, cost, _ in self._items)
        return longest * len(self._items) >= self._limits.token_budget

    def take(self) -> list[T]:
        """Remove and return the next batch, oldest first; at least one item if any wait."""
        batch: list[T] = []
        longest = 0
        while self._items and len(batch) < self._limits.max_size:
            item, cost, _ = self._items[0]
            grown = max(longest, cost)
            if batch and grown * (len(batch) + 1) > self._limits.token_budget:
                break
            self._items.popleft()
            batch.append(item)
            longest = grown
        return batch

    def drop(self, keep: Callable[[T], bool]) -> list[T]:
        """Remove the items for which ``keep`` is false (revoked partitions); return them."""
        dropped = [item for item, _, _ in self._items if not keep(item)]
        self._items = deque(entry for entry in self._items if keep(entry[0]))
        return dropped
