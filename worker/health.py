"""The ops endpoint: ``/metrics`` for Prometheus, ``/healthz`` (the loop is alive) and
``/readyz`` (the model is loaded and the worker is consuming).

``/metrics`` serves the registry with a ``mode`` label (``live`` for ``modstream run``,
``replay`` for ``modstream replay``) on every ``modstream_*`` sample, added here at exposition
rather than declared on each metric: one process runs in one mode, fixed at start-up, so the
dashboards and alerts tell a replay's series from the live workers' without a join.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from worker.errors import StartupError

Mode = Literal["live", "replay"]
PREFIX = "modstream_"


class ModeLabelled:
    """``source``'s metrics, each ``modstream_*`` sample with ``mode=MODE`` added (a sample
    that has a ``mode`` label of its own, ``modstream_worker_mode``, keeps it). Names,
    values, types and the other labels are unchanged; other metrics (``process_*``,
    ``python_*``) pass through as they are."""

    def __init__(self, source: Collector, mode: Mode) -> None:
        self._source = source
        self._mode = mode

    def collect(self) -> Iterable[Metric]:
        for family in self._source.collect():
            if not family.name.startswith(PREFIX):
                yield family
                continue
            labelled = copy.copy(family)
            labelled.samples = [
                s if "mode" in s.labels else s._replace(labels={**s.labels, "mode": self._mode})
                for s in family.samples
            ]
            yield labelled


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        *,
        mode: Mode,
    ) -> None:
        checks = {"/healthz": alive, "/readyz": ready}
        exposed = ModeLabelled(REGISTRY, mode)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(exposed), CONTENT_TYPE_LATEST)
                elif path in checks:
                    ok = checks[path]()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"not ok\n", "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                """Scrapes every few seconds would flood the log."""

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:  # the port taken, the address not this host's, ...
            raise StartupError(
                f"the metrics server cannot listen on {host}:{port} (MODSTREAM_METRICS_HOST, "
                f"MODSTREAM_METRICS_PORT; 0 turns it off): {exc.strerror or exc}"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
