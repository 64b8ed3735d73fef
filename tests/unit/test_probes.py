"""/healthz and /readyz over a process's life: starting, a sink outage, stopping."""

from __future__ import annotations

from tests.fakes import ListSink, record
from tests.unit.test_loop import P0, Rig, metric, post
from worker import metrics
from worker.probes import Probes


def test_while_starting_the_process_is_alive_and_not_ready() -> None:
    probes = Probes(stale_after_s=60)
    assert probes.alive() and not probes.ready()


def test_a_sink_outage_makes_the_worker_unready_but_not_dead_until_it_acknowledges() -> None:
    metrics.init_labels()
    rig = Rig(max_size=2, redis=ListSink("redis", failures=3))
    probes = Probes(stale_after_s=60)
    probes.attach(rig.worker)
    assert probes.ready()
    rig.consumer.queue = [record(0, post(0)), record(1, post(1))]
    rig.worker.step()  # Redis refuses: down
    assert probes.alive() and not probes.ready()
    assert metric("modstream_sink_up", sink="redis") == 0
    assert metric("modstream_sink_up", sink="kafka") == 1
    for delay in (0.1, 0.2):  # still down on each retry; the loop steps on
        rig.clock.advance(delay)
        rig.worker.step()
        assert probes.alive() and not probes.ready()
    assert rig.consumer.committed() == {}
    rig.clock.advance(0.4)
    rig.worker.step()  # the fourth attempt is acknowledged
    assert probes.ready()
    assert metric("modstream_sink_up", sink="redis") == 1
    assert rig.consumer.committed() == {P0: 2}


def test_a_dead_letter_outage_counts_as_a_sink_down() -> None:
    metrics.init_labels()
    rig = Rig(max_size=2)
    rig.dlq.failures = 1
    probes = Probes(stale_after_s=60)
    probes.attach(rig.worker)
    rig.consumer.queue = [record(0, b"not json")]
    rig.worker.step()
    assert not probes.ready()
    assert metric("modstream_sink_up", sink="dead_letter") == 0
    rig.clock.advance(0.1)
    rig.worker.step()
    assert probes.ready() and metric("modstream_sink_up", sink="dead_letter") == 1


def test_a_stopping_worker_is_unready() -> None:
    rig = Rig()
    probes = Probes(stale_after_s=60)
    probes.attach(rig.worker)
    rig.worker.step()
    assert probes.ready()
    rig.worker.request_stop()
    assert probes.alive() and not probes.ready()


def test_a_loop_that_stops_stepping_is_no_longer_alive() -> None:
    rig = Rig()
    probes = Probes(stale_after_s=60)
    probes.attach(rig.worker)
    rig.worker.step()
    rig.clock.advance(61)
    assert not probes.alive() and not probes.ready()
