"""Shared fixtures. Integration tests get real Kafka and Redis from, in order:

1. endpoints in the environment (MODSTREAM_KAFKA_BOOTSTRAP_SERVERS and MODSTREAM_REDIS_URL);
2. testcontainers, when a Docker engine answers;
3. the project's local stack (deploy/local/stack.sh), started if it is not running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Services:
    kafka: str
    redis_url: str
    origin: str


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.removeprefix("export ").strip()
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value.strip("'\"")
    return out


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    kafka = os.environ.get("MODSTREAM_KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("MODSTREAM_REDIS_URL")
    if kafka and redis_url:
        yield Services(kafka, redis_url, "environment")
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer().with_kraft() as k, RedisContainer() as r:
            host, port = r.get_container_host_ip(), r.get_exposed_port(6379)
            yield Services(k.get_bootstrap_server(), f"redis://{host}:{port}/0", "testcontainers")
        return
    subprocess.run(["bash", str(ROOT / "deploy/local/stack.sh"), "up"], check=True)
    env = _read_env_file(ROOT / ".stack/env")
    yield Services(
        env["MODSTREAM_KAFKA_BOOTSTRAP_SERVERS"], env["MODSTREAM_REDIS_URL"], "local stack"
    )


@pytest.fixture
def run_id() -> str:
    """A fresh prefix so each test has its own topics, group and post ids."""
    return uuid.uuid4().hex[:10]
