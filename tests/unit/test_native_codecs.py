"""The clients' C codecs are installed and in use. Without them kafka-python and redis-py
fall back, silently, to pure-Python code that costs CPU the model needs (measured on the
development machine: a CRC-32C over each record batch, about 70 us a record, on consumer
and producer alike; a verdict's Redis write, 53 us against 38 with hiredis). The
dependencies (``kafka-python[crc32c]``, ``redis[hiredis]``) must stay and be the ones used."""

from __future__ import annotations

import crc32c
import redis
from kafka.record import util
from redis.connection import HiredisRespSerializer


def test_kafka_python_checksums_record_batches_in_c() -> None:
    assert util.calc_crc32c.__defaults__ is not None
    assert util.calc_crc32c.__defaults__[0] is crc32c.crc32c


def test_the_c_crc32c_agrees_with_kafka_pythons_own() -> None:
    from kafka.record._crc32c import crc as python_crc32c

    data = bytes(range(256)) * 9
    assert util.calc_crc32c(memoryview(data)) == python_crc32c(data) == crc32c.crc32c(data)


def test_redis_connections_pack_and_parse_with_hiredis() -> None:
    # the call worker.sinks.redis.connect_redis makes, without its PING
    client = redis.Redis.from_url("redis://127.0.0.1:1/0")
    connection = client.connection_pool.make_connection()
    assert isinstance(connection._command_packer, HiredisRespSerializer)
    assert type(connection._parser).__name__ == "_HiredisParser"
    client.close()
