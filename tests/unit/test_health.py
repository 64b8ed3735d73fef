import urllib.error
import urllib.request

import pytest

from tests.fakes import REQUIRED_METRICS
from worker import metrics
from worker.health import HealthServer


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    state = {"alive": True, "ready": False}
    srv = HealthServer("127.0.0.1", 0, lambda: state["alive"], lambda: state["ready"]).start()
    yield f"http://127.0.0.1:{srv.port}", state
    srv.close()


def test_metrics_and_probes(server) -> None:  # type: ignore[no-untyped-def]
    base, state = server
    metrics.init_labels()
    status, body = get(base + "/metrics")
    assert status == 200
    for name in REQUIRED_METRICS:
        assert name in body
    assert 'modstream_verdicts_total{action="block"}' in body
    assert get(base + "/healthz")[0] == 200
    assert get(base + "/readyz")[0] == 503
    state["ready"] = True
    assert get(base + "/readyz")[0] == 200
    state["alive"] = False
    assert get(base + "/healthz")[0] == 503
    assert get(base + "/nope")[0] == 404
