"""Verdicts to Redis: one hash per post, a batch written by one server-side script call."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
from pydantic import SecretStr

from worker.config import Settings
from worker.errors import StartupError, UnavailableError
from worker.schema import Verdict
from worker.sinks import SinkError

# One call per batch: KEYS are the posts' hashes; ARGV is the TTL in seconds (0: none), the
# number of fields n, the n field names, then n values per key in KEYS' order. Each hash is
# deleted and written again (re-processing replaces a verdict rather than merging fields);
# a script runs atomically, so readers never see a half-replaced hash. The same as a
# MULTI/EXEC pipeline of DEL, HSET, EXPIRE per post, in one command instead of 3n + 2: the
# client packs and parses one command and one reply (a batch of 32 verdicts: 28-35 against
# 73-83 us of the client's CPU a post, measured on the development machine).
WRITE_VERDICTS = """
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local fields = {}
for k = 1, #KEYS do
  local base = 2 + n * k
  for f = 1, n do
    fields[2 * f - 1] = ARGV[2 + f]
    fields[2 * f] = ARGV[base + f]
  end
  redis.call('DEL', KEYS[k])
  redis.call('HSET', KEYS[k], unpack(fields))
  if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
end
return #KEYS
"""


def connect_redis(settings: Settings) -> redis.Redis:
    """A client for ``settings.redis_url``, with auth and TLS passed through, that has
    answered a PING and loaded the sink's script: else :class:`StartupError` naming the
    setting to fix."""
    kwargs: dict[str, object] = {
        "socket_timeout": settings.sink_timeout_seconds,
        "socket_connect_timeout": min(10.0, settings.sink_timeout_seconds),
        "health_check_interval": 30,
    }
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_ssl_cafile is not None:
        kwargs["ssl_ca_certs"] = str(settings.redis_ssl_cafile)
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), **kwargs)  # type: ignore[arg-type]
    try:
        check_redis(client, settings)
    except StartupError:
        client.close()
        raise
    return client


def check_redis(client: redis.Redis, settings: Settings) -> None:
    """PING; on failure a StartupError that says which setting to look at and never holds
    the password: an :class:`UnavailableError` when waiting may help (nothing answers, a
    timeout, a server still loading its data), a plain one for a refused login or TLS."""
    where = f"Redis at MODSTREAM_REDIS_URL={redacted_url(settings.redis_url.get_secret_value())}"
    error: type[StartupError] = StartupError
    try:
        client.ping()
        client.script_load(WRITE_VERDICTS)
    except redis.AuthenticationError as exc:
        why = (
            "refused the login: check the user and password in MODSTREAM_REDIS_URL "
            f"(redis://USER:PASSWORD@HOST:PORT/DB) or MODSTREAM_REDIS_PASSWORD ({exc})"
        )
    except redis.exceptions.NoPermissionError as exc:
        why = (
            "let the user in MODSTREAM_REDIS_URL in but not run what the worker needs: PING, "
            f"SCRIPT LOAD, EVALSHA, and DEL, HSET, EXPIRE on its keys ({exc})"
        )
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if _tls_setup_failed(exc):
            why = (
                "fails the TLS connection: check the scheme of MODSTREAM_REDIS_URL (rediss:// "
                f"for TLS) and MODSTREAM_REDIS_SSL_CAFILE ({exc})"
            )
        else:
            why = (
                f"does not answer: check MODSTREAM_REDIS_URL and MODSTREAM_REDIS_SSL_CAFILE ({exc})"
            )
            error = UnavailableError
    except redis.RedisError as exc:
        why = f"is not usable ({type(exc).__name__}: {exc})"
    else:
        return
    text = f"{where} {why}"
    url = settings.redis_url.get_secret_value()
    for secret in (settings.redis_password, urlsplit(url).password, _url_password(url)):
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if value:
            text = text.replace(value, "***")
    raise error(text)


def _tls_setup_failed(exc: BaseException) -> bool:
    """The connection failed in TLS (a certificate the CA does not verify, TLS spoken to a
    plain port) or on its files (MODSTREAM_REDIS_SSL_CAFILE): a setting to fix, not an
    outage. A connection cut during the handshake (EOF) is an outage."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError):
            return True
        if isinstance(cause, (FileNotFoundError, PermissionError)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def redacted_url(url: str) -> str:
    """The URL with its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _url_password(url: str) -> str | None:
    password = urlsplit(url).password
    return unquote(password) if password else None


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
        "json": verdict.serialized,
    }


class RedisVerdictSink:
    name = "redis"

    def __init__(self, client: redis.Redis, key_prefix: str, ttl_seconds: int) -> None:
        self._client = client
        self._prefix = key_prefix
        self._ttl = ttl_seconds
        # EVALSHA, loading the script again if the server lost it (a restart, SCRIPT FLUSH).
        self._write = client.register_script(WRITE_VERDICTS)

    def key(self, post_id: str) -> str:
        return f"{self._prefix}{post_id}"

    def write_batch(self, items: Sequence[Verdict]) -> None:
        if not items:
            return
        rows = [verdict_fields(v) for v in items]
        names = list(rows[0])
        args: list[str | int] = [self._ttl, len(names), *names]
        for row in rows:
            args.extend(row[name] for name in names)
        try:
            self._write(keys=[self.key(v.post_id) for v in items], args=args)
        except redis.RedisError as exc:
            raise SinkError(f"redis write failed: {exc}") from exc

    def close(self) -> None:
        self._client.close()
