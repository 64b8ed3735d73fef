import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.fakes import REQUIRED_METRICS
from worker import metrics
from worker.health import HealthServer, Mode, ModeLabelled


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    state = {"alive": True, "ready": False}
    srv = HealthServer(
        "127.0.0.1", 0, lambda: state["alive"], lambda: state["ready"], mode="live"
    ).start()
    yield f"http://127.0.0.1:{srv.port}", state
    srv.close()


def test_metrics_and_probes(server) -> None:  # type: ignore[no-untyped-def]
    base, state = server
    metrics.init_labels()
    status, body = get(base + "/metrics")
    assert status == 200
    for name in REQUIRED_METRICS:
        assert name in body
    assert 'modstream_verdicts_total{action="block",mode="live"}' in body
    assert get(base + "/healthz")[0] == 200
    assert get(base + "/readyz")[0] == 503
    state["ready"] = True
    assert get(base + "/readyz")[0] == 200
    state["alive"] = False
    assert get(base + "/healthz")[0] == 503
    assert get(base + "/nope")[0] == 404


# ---- the mode label -----------------------------------------------------------------------


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition, read by prometheus_client's own parser."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def without_mode(s: Sample) -> tuple[str, tuple[tuple[str, str], ...], float]:
    labels = {k: v for k, v in s.labels.items() if k != "mode"}
    return s.name, tuple(sorted(labels.items())), s.value


@pytest.fixture
def registry() -> CollectorRegistry:
    """One metric of each kind the worker declares, with values, in a registry of its own."""
    reg = CollectorRegistry()
    Counter("modstream_things_total", "Things.", ["action"], registry=reg).labels("block").inc(3)
    hist = Histogram("modstream_thing_seconds", "Seconds.", buckets=(0.1, 1.0), registry=reg)
    hist.observe(0.05)
    hist.observe(0.5)
    Gauge("modstream_pending", "Pending.", registry=reg).set(7)
    Gauge("modstream_worker_mode", "Mode.", ["mode"], registry=reg).labels("replay").set(1)
    Info("modstream_model", "Model.", registry=reg).info({"version": "ms-1"})
    Gauge("process_open_fds", "Not ours.", registry=reg).set(12)
    return reg


@pytest.mark.parametrize("mode", ["live", "replay"])
def test_every_modstream_sample_carries_the_mode_and_keeps_its_value(
    registry: CollectorRegistry, mode: Mode
) -> None:
    plain = samples(generate_latest(registry).decode())
    labelled = samples(generate_latest(ModeLabelled(registry, mode)).decode())
    ours = [s for s in labelled if s.name.startswith("modstream_")]
    assert ours and all("mode" in s.labels for s in ours)
    assert {s.labels["mode"] for s in ours if s.name != "modstream_worker_mode"} == {mode}
    # Nothing but the label changes: names (suffixes included), other labels and values.
    assert sorted(map(without_mode, labelled)) == sorted(map(without_mode, plain))
    assert [s for s in labelled if s.name == "process_open_fds"] == [
        s for s in plain if s.name == "process_open_fds"
    ]


def test_counters_histograms_and_info_keep_their_suffixes_and_types(
    registry: CollectorRegistry,
) -> None:
    text = generate_latest(ModeLabelled(registry, "replay")).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["modstream_things"].type == "counter"
    assert families["modstream_thing_seconds"].type == "histogram"
    assert families["modstream_model_info"].type == "gauge"  # an Info is written as a gauge
    names = {s.name for f in families.values() for s in f.samples}
    assert {
        "modstream_things_total",
        "modstream_things_created",
        "modstream_thing_seconds_bucket",
        "modstream_thing_seconds_sum",
        "modstream_thing_seconds_count",
        "modstream_thing_seconds_created",
        "modstream_model_info",
    } <= names
    buckets = {
        s.labels["le"]: s.value
        for s in families["modstream_thing_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets == {"0.1": 1.0, "1.0": 2.0, "+Inf": 2.0}
    assert 'modstream_things_total{action="block",mode="replay"} 3.0' in text
    assert 'modstream_model_info{mode="replay",version="ms-1"} 1.0' in text
    # A metric with a mode label of its own keeps it rather than carrying two.
    assert 'modstream_worker_mode{mode="replay"} 1.0' in text
    assert "process_open_fds 12.0" in text


def test_the_replay_endpoint_labels_the_real_registry(server) -> None:  # type: ignore[no-untyped-def]
    metrics.init_labels()
    metrics.EVENTS_CONSUMED.labels("posts")  # a series for each required name
    replay = HealthServer("127.0.0.1", 0, lambda: True, lambda: True, mode="replay").start()
    try:
        _, live_body = get(server[0] + "/metrics")
        _, replay_body = get(f"http://127.0.0.1:{replay.port}/metrics")
    finally:
        replay.close()
    for body, mode in ((live_body, "live"), (replay_body, "replay")):
        ours = [s for s in samples(body) if s.name.startswith("modstream_")]
        assert {s.name for s in ours} >= set(REQUIRED_METRICS)
        assert all(s.labels.get("mode") == mode for s in ours if s.name != "modstream_worker_mode")
