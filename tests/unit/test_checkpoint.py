from worker.checkpoint import OffsetTracker, Partition

P0, P1 = Partition("posts", 0), Partition("posts", 1)


def test_commit_stops_at_the_first_unfinished_offset() -> None:
    t = OffsetTracker()
    for off in (5, 6, 7):
        t.track(P0, off)
    t.done(P0, 6)
    assert t.committable() == {}
    t.done(P0, 5)
    assert t.committable() == {P0: 7}
    t.done(P0, 7)
    assert t.committable() == {P0: 8}
    assert t.in_flight() == 0


def test_only_moved_partitions_are_committed_again() -> None:
    t = OffsetTracker()
    t.track(P0, 0)
    t.track(P1, 10)
    t.done(P0, 0)
    t.done(P1, 10)
    t.mark_committed(t.committable())
    assert t.committable() == {}
    t.track(P1, 11)
    t.done(P1, 11)
    assert t.committable() == {P1: 12}


def test_forgotten_partitions_ignore_late_results() -> None:
    t = OffsetTracker()
    t.track(P0, 3)
    t.forget([P0])
    assert t.done(P0, 3) is False
    assert t.committable() == {} and t.in_flight() == 0
