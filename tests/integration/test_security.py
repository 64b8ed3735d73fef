"""The worker against the secure local stack (``stack.sh up --secure``): Kafka over SASL_SSL
with a SCRAM-SHA-512 user and a self-signed CA, Redis with an ACL user and password.

A real ``modstream run`` process moderates posts produced through SASL_SSL; the verdicts are
read back from Redis as the ACL user and from the output topic through SASL_SSL. A wrong
Kafka or Redis password stops the worker at start with a message that names the setting and
does not hold the secret.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer

from modstream_dev.stack import create_topics as create_run_topics
from tests.integration.helpers import child_env, events, to_bytes, verdict_keys, wait_for
from worker import localstack
from worker.config import Settings, load_settings
from worker.kafka_client import make_producer, security_kwargs

# A cold start of the secure stack on a loaded 2-core machine takes minutes (fixture time
# counts against the per-test timeout).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class SecureStack:
    """The secure stack's MODSTREAM_* settings; kept out of repr so that a failing test's
    report does not print the passwords."""

    env: dict[str, str] = field(repr=False)


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureStack]:
    """Started here (and stopped after) if it is not running. The plain stack is left alone."""
    was_running = localstack.running(secure=True)
    stack = SecureStack(localstack.up(secure=True))
    yield stack
    if not was_running:
        localstack.down(secure=True)


def settings_for(stack: SecureStack, run_id: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {k.removeprefix("MODSTREAM_").lower(): v for k, v in stack.env.items()}
    values.update(
        input_topic=f"posts-{run_id}",
        output_topic=f"verdicts-{run_id}",
        dlq_topic=f"posts-{run_id}.dlq",
        group_id=f"modstream-{run_id}",
        metrics_port=0,
        batch_max_wait_ms=20,
        shutdown_grace_seconds=10,
    )
    values.update(overrides)
    return load_settings(**values)


def worker_env(settings: Settings, **replace: str) -> dict[str, str]:
    """The environment of a ``modstream run`` child: the secure settings, nothing inherited."""
    env = child_env(
        settings,
        MODSTREAM_KAFKA_SECURITY_PROTOCOL=settings.kafka_security_protocol,
        MODSTREAM_KAFKA_SASL_MECHANISM=str(settings.kafka_sasl_mechanism),
        MODSTREAM_KAFKA_SASL_USERNAME=str(settings.kafka_sasl_username),
        MODSTREAM_KAFKA_SASL_PASSWORD=secret(settings.kafka_sasl_password),
        MODSTREAM_KAFKA_SSL_CAFILE=str(settings.kafka_ssl_cafile),
    )
    env.update(replace)
    return env


def secret(value: Any) -> str:
    assert value is not None
    return str(value.get_secret_value())


def create_topics(settings: Settings) -> None:
    """One partition each, created through SASL_SSL."""
    create_run_topics(settings, partitions=1)


def read_topic(settings: Settings, topic: str, expected: int) -> list[Any]:
    """Records of ``topic`` read through SASL_SSL (stops at ``expected`` or after 60 s)."""
    consumer = KafkaConsumer(
        topic,
        **security_kwargs(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    records: list[Any] = []
    try:

        def enough() -> bool:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            return len(records) >= expected

        wait_for(enough, 60, f"{expected} records on {topic}")
    finally:
        consumer.close()
    return records


def test_worker_moderates_through_sasl_ssl_and_redis_acl(
    secure: SecureStack, tmp_path: Path
) -> None:
    run_id = uuid.uuid4().hex[:10]
    settings = settings_for(secure, run_id)
    create_topics(settings)
    posts = events(run_id, 6)
    producer = make_producer(settings)
    for event in posts:
        producer.send(settings.input_topic, key=event["post_id"].encode(), value=to_bytes(event))
    producer.send(settings.input_topic, key=b"bad", value=b"{not json")
    producer.flush()
    producer.close()

    # The ACL user reads the verdicts; without credentials Redis answers nothing.
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    anonymous_url = f"redis://{settings.redis_url.get_secret_value().rpartition('@')[2]}"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(anonymous_url).ping()

    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=worker_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: len(verdict_keys(client, run_id)) >= len(posts), 480, "6 verdicts")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()

    stored = {
        key.decode().rsplit(":", 1)[1]: client.hget(key, "action")
        for key in verdict_keys(client, run_id)
    }
    assert set(stored) == {p["post_id"] for p in posts}
    verdicts = [json.loads(r.value) for r in read_topic(settings, settings.output_topic, 6)]
    assert {v["post_id"]: v["action"].encode() for v in verdicts} == stored
    [dead] = read_topic(settings, settings.dlq_topic, 1)
    assert (dead.key, dead.value) == (b"bad", b"{not json")
    assert dict(dead.headers)["modstream.reason"] == b"not_json"
    output = log.read_text()
    for value in (secret(settings.kafka_sasl_password), redis_password(settings)):
        assert value not in output


def redis_password(settings: Settings) -> str:
    return settings.redis_url.get_secret_value().rpartition("@")[0].rpartition(":")[2]


@pytest.mark.parametrize("setting", ["KAFKA_SASL_PASSWORD", "REDIS_URL", "REDIS_PASSWORD"])
def test_a_wrong_password_stops_the_worker_at_start_naming_the_setting(
    secure: SecureStack, setting: str
) -> None:
    settings = settings_for(secure, uuid.uuid4().hex[:10])
    wrong = f"wrong-{uuid.uuid4().hex}"
    url = settings.redis_url.get_secret_value()
    replace = {
        "KAFKA_SASL_PASSWORD": {"MODSTREAM_KAFKA_SASL_PASSWORD": wrong},
        "REDIS_URL": {"MODSTREAM_REDIS_URL": url.replace(redis_password(settings), wrong)},
        # The user in the URL, the (wrong) password on its own.
        "REDIS_PASSWORD": {
            "MODSTREAM_REDIS_URL": url.replace(f":{redis_password(settings)}@", "@"),
            "MODSTREAM_REDIS_PASSWORD": wrong,
        },
    }[setting]
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=worker_env(settings, **replace),
        capture_output=True,
        text=True,
        timeout=600,  # model load first: minutes on a starved CPU
    )
    output = done.stdout + done.stderr
    assert done.returncode == 3, output[-3000:]  # README: "exits at once with status 3"
    assert f"MODSTREAM_{setting}" in output, output[-3000:]
    for value in (wrong, secret(settings.kafka_sasl_password), redis_password(settings)):
        assert value not in output
