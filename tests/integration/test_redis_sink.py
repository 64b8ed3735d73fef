"""The Redis sink against a real Redis: what a batch write leaves, a server that lost the
sink's script, a user that may not run it."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from tests.integration.helpers import settings_for
from worker.errors import StartupError
from worker.schema import Action, MisinformationResult, SentimentResult, Verdict
from worker.sinks.redis import RedisVerdictSink, connect_redis, verdict_fields

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def verdict(post_id: str, action: Action = Action.ALLOW, score: float = 0.1) -> Verdict:
    return Verdict(
        post_id=post_id,
        action=action,
        reasons=[f"fake_score={score:.2f} < review_fake=0.50"],
        sentiment=SentimentResult(
            label="neutral", scores={"negative": 0.1, "neutral": 0.8, "positive": 0.1}
        ),
        misinformation=MisinformationResult(label="real", score=score),
        model_version="m1",
        event_time=NOW,
        processed_at=NOW,
        source_topic="posts",
        source_partition=0,
        source_offset=int(post_id.rsplit("-", 1)[1]),
    )


@pytest.fixture
def client(services) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(services.redis_url)
    yield client
    client.close()


def test_a_batch_leaves_one_whole_hash_per_post_with_its_ttl(
    client: redis.Redis, run_id: str
) -> None:
    prefix = f"modstream:test:{run_id}:"
    verdicts = [verdict(f"{run_id}-{i}", score=i / 100) for i in range(40)]
    # A hash from an older writer, with a field this one does not write: replaced, not merged.
    client.hset(f"{prefix}{verdicts[3].post_id}", mapping={"stale": "1", "action": "block"})
    RedisVerdictSink(client, prefix, ttl_seconds=600).write_batch(verdicts)

    for v in verdicts:
        stored = client.hgetall(f"{prefix}{v.post_id}")
        assert {k.decode(): x.decode() for k, x in stored.items()} == verdict_fields(v)
        assert json.loads(stored[b"json"]) == json.loads(v.model_dump_json())
        assert 590 < client.ttl(f"{prefix}{v.post_id}") <= 600

    RedisVerdictSink(client, prefix, ttl_seconds=0).write_batch(verdicts[:1])
    assert client.ttl(f"{prefix}{verdicts[0].post_id}") == -1  # no TTL asked: none kept
    client.delete(*(f"{prefix}{v.post_id}" for v in verdicts))


def test_a_server_that_lost_the_script_is_given_it_again(client: redis.Redis, run_id: str) -> None:
    prefix = f"modstream:test:{run_id}:"
    sink = RedisVerdictSink(client, prefix, ttl_seconds=60)
    sink.write_batch([verdict(f"{run_id}-1")])
    client.script_flush()  # what a restarted server without persistence of scripts looks like
    sink.write_batch([verdict(f"{run_id}-2", Action.BLOCK, 0.9)])
    assert client.hget(f"{prefix}{run_id}-2", "action") == b"block"
    client.delete(f"{prefix}{run_id}-1", f"{prefix}{run_id}-2")


def test_a_user_who_may_not_run_the_script_is_refused_at_start(  # type: ignore[no-untyped-def]
    services, client: redis.Redis, run_id: str
) -> None:
    user, password = f"modstream-test-{run_id}", secrets.token_hex(8)
    client.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        commands=["+@all", "-@scripting"],
    )
    try:
        parts = urlsplit(services.redis_url)
        url = urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))
        settings = settings_for(dataclasses.replace(services, redis_url=url), run_id)
        with pytest.raises(StartupError) as info:
            connect_redis(settings)
    finally:
        client.acl_deluser(user)
    message = str(info.value)
    assert "SCRIPT LOAD" in message and "MODSTREAM_REDIS_URL" in message
    assert password not in message
