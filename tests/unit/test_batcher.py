import pytest

from tests.fakes import ManualClock
from worker.batcher import BatchLimits, MicroBatcher


def make(
    max_size: int = 4, wait: float = 0.05, budget: int = 1000
) -> tuple[MicroBatcher[int], ManualClock]:
    clock = ManualClock()
    # Items are their own token cost.
    return MicroBatcher(BatchLimits(max_size, wait, budget), cost=lambda x: x, clock=clock), clock


def test_empty_batcher_is_never_ready() -> None:
    b, clock = make()
    clock.advance(10)
    assert not b.ready() and b.time_left() is None and b.take() == []


def test_full_batch_is_ready_at_once_and_keeps_order() -> None:
    b, _ = make(max_size=3)
    b.extend([1, 2, 3, 4])
    assert b.ready()
    assert b.take() == [1, 2, 3]
    assert len(b) == 1


def test_wait_counts_from_the_first_item() -> None:
    b, clock = make(wait=0.05)
    b.add(1)
    clock.advance(0.04)
    b.add(2)
    assert not b.ready()
    assert b.time_left() == pytest.approx(0.01)
    clock.advance(0.01)
    assert b.ready()
    assert b.take() == [1, 2]


def test_after_a_take_the_timer_follows_the_oldest_remaining_item() -> None:
    b, clock = make(max_size=2, wait=0.05)
    b.add(1)
    clock.advance(0.03)
    b.extend([2, 3])
    assert b.take() == [1, 2]
    assert b.time_left() == pytest.approx(0.05)


def test_token_budget_counts_padding() -> None:
    # Budget 100: [10, 10, 40] pads to 3 x 40 = 120 > 100, so 40 starts the next batch.
    b, _ = make(max_size=10, budget=100)
    b.extend([10, 10, 40])
    assert b.ready()  # 3 x 40 >= 100
    assert b.take() == [10, 10]
    assert b.take() == [40]


def test_an_item_over_budget_still_goes_alone() -> None:
    b, _ = make(budget=50)
    b.extend([80, 1])
    assert b.take() == [80]
    assert b.take() == [1]


def test_drop_removes_matching_items() -> None:
    b, _ = make()
    b.extend([1, 2, 3])
    assert b.drop(keep=lambda x: x != 2) == [2]
    assert b.take() == [1, 3]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        BatchLimits(0, 0.1, 10)
    with pytest.raises(ValueError):
        BatchLimits(1, -1, 10)
