"""The tokenise/batch stage on its own: when a batch is handed to the model."""

from __future__ import annotations

import pytest

from tests.fakes import FakeModel, ManualClock, record
from worker.batcher import BatchLimits, MicroBatcher, Size
from worker.checkpoint import Partition
from worker.flow import Board, Channel, Generations, Item, Prepared, Ref, WriteJob
from worker.schema import Post, SourceRef, decode
from worker.stages import TokenizeStage


class Stage:
    def __init__(self, max_size: int = 4, wait: float = 0.05) -> None:
        self.clock = ManualClock()
        self.model_idle = False
        board = Board()
        self.inbox: Channel[list[Item]] = Channel(board)
        self.slot: Channel[list[Prepared]] = Channel(board, capacity=1)
        self.letters: Channel[WriteJob] = Channel(board)
        self.generations = Generations()
        batcher: MicroBatcher[Prepared] = MicroBatcher(
            BatchLimits(max_size, wait, 10_000),
            lambda p: Size(p.encoded.rows, p.encoded.tokens),
            self.clock,
        )
        model = FakeModel()
        self.stage = TokenizeStage(
            lambda: model,
            batcher,
            self.inbox,
            self.slot,
            self.letters,
            self.generations,
            lambda: self.model_idle,
        )
        self.offset = 0

    def feed(self, *texts: str, partition: int = 0) -> None:
        items = []
        for text in texts:
            rec = record(self.offset, {"post_id": f"p{self.offset}", "text": text}, partition)
            post = decode(
                rec.key,
                rec.value,
                SourceRef("posts", partition, self.offset),
                max_event_bytes=10**6,
            )
            assert isinstance(post, Post)
            ref = Ref(post.source, self.generations.current(rec.tp), self.clock())
            items.append(Item(post, rec, ref))
            self.offset += 1
        self.inbox.put(items)

    def run(self) -> None:
        while self.stage.work():
            pass

    def handed(self) -> list[list[str]]:
        out = []
        while (batch := self.slot.take()) is not None:
            out.append([p.item.post.event.post_id for p in batch])
        return out


def test_while_the_model_is_busy_a_batch_forms_until_its_oldest_post_waited_max_wait() -> None:
    s = Stage(max_size=4, wait=0.05)
    s.feed("a", "b")
    s.run()
    assert s.handed() == []  # not full, not overdue, the model is busy
    s.clock.advance(0.03)
    s.feed("c")
    s.run()
    assert s.handed() == []
    assert s.stage.wait_s() == pytest.approx(0.02)
    s.clock.advance(0.02)
    s.run()
    assert s.handed() == [["p0", "p1", "p2"]]  # the oldest has waited max wait: it goes


def test_an_idle_model_gets_what_is_waiting_at_once() -> None:
    s = Stage(max_size=4, wait=60)
    s.model_idle = True
    s.feed("a")
    s.run()
    assert s.handed() == [["p0"]]


def test_the_next_batch_keeps_forming_while_the_slot_is_full() -> None:
    s = Stage(max_size=2, wait=0.05)
    s.feed("a", "b")  # full: goes to the slot
    s.run()
    s.feed("c")
    s.clock.advance(1)
    s.run()  # "c" is overdue, but the slot still holds the first batch
    s.feed("d", "e")
    s.run()
    assert [p.item.post.event.post_id for p in s.slot.take() or []] == ["p0", "p1"]
    s.run()  # the slot is free: the oldest ("c") goes with one more
    assert s.handed() == [["p2", "p3"]]


def test_posts_of_a_revoked_partition_are_dropped_before_the_model() -> None:
    s = Stage(max_size=4, wait=0.05)
    s.feed("a", partition=0)
    s.feed("b", partition=1)
    s.run()
    s.generations.bump([Partition("posts", 1)])
    s.clock.advance(1)
    s.run()
    assert s.handed() == [["p0"]]
