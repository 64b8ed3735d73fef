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

import pytest

from worker import localstack


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
    env = localstack.up()
    yield Services(
        env["MODSTREAM_KAFKA_BOOTSTRAP_SERVERS"], env["MODSTREAM_REDIS_URL"], "local stack"
    )


@pytest.fixture
def run_id() -> str:
    """A fresh prefix so each test has its own topics, group and post ids."""
    return uuid.uuid4().hex[:10]
