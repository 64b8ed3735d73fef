"""Verdicts to Redis: one hash per post, written in one pipelined round trip per batch."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from worker.config import Settings
from worker.schema import Verdict
from worker.sinks import SinkError


def connect_redis(settings: Settings) -> redis.Redis:
    """A client for ``settings.redis_url``, with auth and TLS passed through."""
    kwargs: dict[str, object] = {
        "socket_timeout": settings.sink_timeout_seconds,
        "socket_connect_timeout": min(10.0, settings.sink_timeout_seconds),
        "health_check_interval": 30,
    }
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_ssl_cafile is not None:
        kwargs["ssl_ca_certs"] = str(settings.redis_ssl_cafile)
    return redis.Redis.from_url(settings.redis_url.get_secret_value(), **kwargs)  # type: ignore[arg-type]


def verdict_fields(verdict: Verdict) -> dict[str, str]:
    """The hash stored per post. ``json`` holds the whole verdict."""
    return {
        "action": verdict.action.value,
        "reasons": "; ".join(verdict.reasons),
        "sentiment": verdict.sentiment.label,
        "misinformation": verdict.misinformation.label,
        "fake_score": f"{verdict.misinformation.score:.6f}",
        "model_version": verdict.model_version,
        "event_time": verdict.event_time.isoformat(),
        "processed_at": verdict.processed_at.isoformat(),
        "json": verdict.model_dump_json(),
    }


class RedisVerdictSink:
    name = "redis"

    def __init__(self, client: redis.Redis, key_prefix: str, ttl_seconds: int) -> None:
        self._client = client
        self._prefix = key_prefix
        self._ttl = ttl_seconds

    def key(self, post_id: str) -> str:
        return f"{self._prefix}{post_id}"

    def write_batch(self, items: Sequence[Verdict]) -> None:
        if not items:
            return
        # One MULTI/EXEC: readers never see a half-replaced hash.
        pipe = self._client.pipeline(transaction=True)
        for verdict in items:
            key = self.key(verdict.post_id)
            # DEL first: re-processing overwrites the whole hash instead of merging fields.
            pipe.delete(key)
            pipe.hset(key, mapping=verdict_fields(verdict))  # type: ignore[arg-type]
            if self._ttl:
                pipe.expire(key, self._ttl)
        try:
            pipe.execute(raise_on_error=True)
        except redis.RedisError as exc:
            raise SinkError(f"redis write failed: {exc}") from exc

    def close(self) -> None:
        self._client.close()
