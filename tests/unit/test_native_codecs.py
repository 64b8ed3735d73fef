"""The clients' C codecs are installed and in use. Without them kafka-python and redis-py
fall back, silently, to pure-Python code that costs CPU the model needs (measured on the
development machine: a CRC-32C over each record batch, about 0.1 us a byte, on consumer
and producer alike; a verdict's Redis write, 53 us against 38 with hiredis). The
dependencies (``kafka-python[crc32c]``, ``redis[hiredis]``) must stay and be the ones used."""

from __future__ import annotations

import crc32c
import pytest
from kafka.record import util
from redis.connection import HiredisRespSerializer

from worker import config
from worker.sinks import redis as redis_sink


def test_kafka_python_checksums_record_batches_in_c() -> None:
    assert util.calc_crc32c.__defaults__ is not None
    assert util.calc_crc32c.__defaults__[0] is crc32c.crc32c


def test_the_redis_sinks_client_packs_and_parses_with_hiredis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_sink, "check_redis", lambda client, settings: None)  # no PING
    client = redis_sink.connect_redis(config.load_settings(redis_url="redis://127.0.0.1:1/0"))
    connection = client.connection_pool.make_connection()
    assert isinstance(connection._command_packer, HiredisRespSerializer)
    assert type(connection._parser).__name__ == "_HiredisParser"
    client.close()
