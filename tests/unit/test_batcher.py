import pytest

from tests.fakes import ManualClock
from worker.batcher import BatchLimits, MicroBatcher, Size


def make(
    max_size: int = 4, wait: float = 0.05, budget: int = 1000
) -> tuple[MicroBatcher[int], ManualClock]:
    clock = ManualClock()
    # Items are their own token length, one row each.
    return MicroBatcher(BatchLimits(max_size, wait, budget), lambda x: Size(1, x), clock), clock


def test_empty_batcher_is_never_ready() -> None:
    b, clock = make()
    clock.advance(10)
    assert not b.ready() and not b.ready(idle=True)
    assert b.time_left() is None and b.take() == []


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


def test_an_idle_model_takes_what_is_there_at_once() -> None:
    b, _ = make(max_size=8, wait=60)
    b.add(5)
    assert not b.ready()
    assert b.ready(idle=True)
    assert b.take() == [5]


def test_after_a_take_the_timer_follows_the_oldest_remaining_item() -> None:
    b, clock = make(max_size=2, wait=0.05)
    b.add(1)
    clock.advance(0.03)
    b.extend([1, 1])
    assert b.take() == [1, 1]
    assert b.time_left() == pytest.approx(0.05)


def test_waiting_work_that_fills_the_budget_is_ready() -> None:
    b, _ = make(max_size=10, budget=100)
    b.extend([30, 30])
    assert not b.ready()
    b.add(40)  # 100 real tokens waiting: a full batch's worth
    assert b.ready()


def test_batches_group_posts_of_similar_length_around_the_oldest() -> None:
    # Arrival order mixes long and short; a batch of 3 takes the oldest (10) and the two
    # closest to it in length, not the next two in arrival order.
    b, _ = make(max_size=3, budget=10_000)
    b.extend([10, 100, 12, 98, 11, 97])
    assert b.take() == [10, 12, 11]
    assert b.take() == [100, 98, 97]


def test_grouping_cuts_padding_against_arrival_order() -> None:
    lengths = [8, 120, 9, 110, 10, 115, 7, 118]
    b, _ = make(max_size=4, budget=10_000)
    b.extend(lengths)
    grouped = [b.take(), b.take()]
    padded = sum(len(batch) * max(batch) for batch in grouped)
    in_order = sum(4 * max(lengths[i : i + 4]) for i in (0, 4))
    assert sorted(x for batch in grouped for x in batch) == sorted(lengths)
    assert padded < 0.6 * in_order


def test_token_budget_counts_padding_and_rows() -> None:
    clock = ManualClock()
    # Each item: (rows, tokens). Budget 100: the oldest (1 x 40) fits with one more 1 x 40,
    # and a 2-row item of 30 would pad to 3 x 40 = 120 > 100.
    b: MicroBatcher[tuple[int, int]] = MicroBatcher(
        BatchLimits(10, 1.0, 100), lambda x: Size(*x), clock
    )
    b.extend([(1, 40), (2, 30), (1, 40)])
    assert b.take() == [(1, 40), (1, 40)]
    assert b.take() == [(2, 30)]


def test_an_item_over_budget_still_goes_alone() -> None:
    b, _ = make(budget=50)
    b.extend([80, 1])
    assert b.take() == [80]
    assert b.take() == [1]


def test_the_oldest_is_never_passed_over() -> None:
    # However many short posts keep arriving, each batch holds the oldest waiting post.
    b, clock = make(max_size=2, wait=0.05)
    b.add(100)
    for _ in range(5):
        b.extend([1, 1, 1])
        clock.advance(0.01)
    assert 100 in b.take()


def test_drop_removes_matching_items_and_their_work() -> None:
    b, _ = make(max_size=10, budget=100)
    b.extend([1, 60, 3])
    assert b.drop(keep=lambda x: x != 60) == [60]
    assert not b.ready()  # the dropped item's tokens no longer count
    assert b.take() == [1, 3]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        BatchLimits(0, 0.1, 10)
    with pytest.raises(ValueError):
        BatchLimits(1, -1, 10)
    with pytest.raises(ValueError):
        BatchLimits(1, 0.1, 0)


def test_a_batch_is_chosen_among_the_oldest_lookahead_batches_worth_only() -> None:
    from worker.batcher import LOOKAHEAD

    b, _ = make(max_size=2, budget=10**6)
    window = 2 * LOOKAHEAD
    b.extend([10] + [100] * (window - 1) + [10])  # the matching 10 arrives past the window
    assert b.take() == [10, 100]
    assert len(b) == window - 1


def padding_capped(max_padding: float) -> MicroBatcher[int]:
    return MicroBatcher(
        BatchLimits(8, 0.05, 1000, max_padding), lambda x: Size(1, x), ManualClock()
    )


def test_posts_that_would_pad_the_batch_past_the_cap_wait_for_the_next_one() -> None:
    b = padding_capped(0.25)
    b.extend([10, 10, 40, 11])
    # 10, 10 and 11 pad to 33 tokens with 2 of padding (6%); 40 would make it 160 with 89
    assert b.take() == [10, 10, 11]
    assert b.take() == [40]


def test_without_a_padding_cap_one_batch_takes_every_length() -> None:
    b = padding_capped(1.0)
    b.extend([10, 10, 40, 11])
    assert b.take() == [10, 10, 40, 11]


def test_the_oldest_post_goes_first_even_when_nothing_matches_its_length() -> None:
    b = padding_capped(0.25)
    b.extend([40, 10, 10, 10])
    assert b.take() == [40]
    assert b.take() == [10, 10, 10]


def test_the_padding_cap_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="max_padding"):
        BatchLimits(1, 0.1, 10, 1.5)


def rounds_rows_to_eights(rows: int) -> int:
    """What a bf16 CPU model computes (models.runtime.round_rows with a step of 8)."""
    return -(-rows // 8) * 8 if rows >= 8 else 1 << (rows - 1).bit_length()


def row_rounding(max_size: int = 64) -> MicroBatcher[tuple[int, int]]:
    """Items are (rows, tokens)."""
    return MicroBatcher(
        BatchLimits(max_size, 0.05, 10**6),
        lambda x: Size(*x),
        ManualClock(),
        rows_padded=rounds_rows_to_eights,
    )


def test_a_batch_is_cut_back_to_rows_the_model_computes_without_filler() -> None:
    b = row_rounding()
    b.extend([(1, 10)] * 10)  # 10 rows would be computed as 16
    assert len(b.take()) == 8
    assert len(b.take()) == 2  # the rest: 2 rows, computed as they are
    b.extend([(1, 10)] * 5)  # 5 -> 4 + 1
    assert [len(b.take()), len(b.take())] == [4, 1]


def test_the_cut_leaves_out_the_items_farthest_in_length() -> None:
    b = row_rounding()
    b.extend([(1, 10), (1, 50), (1, 11), (1, 12), (1, 10)])
    assert b.take() == [(1, 10), (1, 11), (1, 12), (1, 10)]  # 50 waits for the next batch
    assert b.take() == [(1, 50)]


def test_whole_steps_are_not_cut_and_an_oldest_of_odd_rows_goes_as_it_is() -> None:
    b = row_rounding()
    b.extend([(1, 10)] * 16)
    assert len(b.take()) == 16
    b.extend([(3, 10), (1, 10), (3, 10)])  # heads of 3, 4 and 7 rows: only 4 has no filler
    assert b.take() == [(3, 10), (1, 10)]
    b.extend([(3, 10)])  # 3 + 3 = 6 rows: no head fits, so the batch goes whole
    assert b.take() == [(3, 10), (3, 10)]
