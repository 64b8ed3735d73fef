"""One frozen settings object, read once at start-up and passed down.

Every setting is an environment variable ``MODSTREAM_<NAME>`` (or a line in an optional
``.env``-style file given with ``--env-file``). Nothing else in the package reads the
environment.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models import DEFAULT_ARTIFACT_DIR
from models.devices import CPU_ONLY_BACKENDS, Backend, parse_device


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names it."""


# The pseudonym key a development machine runs with; anyone with the source can reverse
# pseudonyms made with it (by hashing candidate ids), so `run` and `replay` warn about it.
DEVELOPMENT_PSEUDONYM_KEY = "modstream-dev-key-change-me"
# Kubernetes' service links: a Service named ``modstream`` or ``modstream-*`` puts these into
# every pod of its namespace (NAME_SERVICE_HOST, NAME_SERVICE_PORT[_PORTNAME],
# NAME_PORT=tcp://..., NAME_PORT_9400_TCP[_PROTO|_PORT|_ADDR]).
_SERVICE_LINK = re.compile(
    r"^MODSTREAM(_\w+?)?_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)$"
)
_SERVICE_LINK_URL = re.compile(r"^(tcp|udp|sctp)://")


class Settings(BaseSettings):
    """Everything the worker, the producer and the demo can be told."""

    model_config = SettingsConfigDict(
        env_prefix="MODSTREAM_",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    input_topic: str = Field("posts", description="Topic the post events are read from.")
    output_topic: str = Field("verdicts", description="Topic verdicts are written to.")
    dlq_topic: str = Field("posts.dlq", description="Dead-letter topic for bad records.")
    group_id: str = Field("modstream", description="Kafka consumer group id.")
    client_id: str = Field("modstream", description="Kafka client id (shows in broker logs).")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new consumer group starts reading."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None
    ) = Field(None, description="SASL mechanism when the protocol is SASL_*.")
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for Kafka TLS.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for Kafka TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client key for Kafka TLS.")
    poll_timeout_ms: int = Field(100, ge=1, le=60_000, description="Longest wait in one poll.")
    max_poll_records: int = Field(500, ge=1, description="Most records one poll returns.")
    max_pending_records: int = Field(
        5_000, ge=1, description="Records buffered before consumption pauses (backpressure)."
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once",
        description="at-least-once: offsets commit after every sink acknowledged (a crash can "
        "repeat verdicts on the output topic). exactly-once: verdicts, dead letters and offsets "
        "commit in one Kafka transaction (read_committed readers see each post once).",
    )
    commit_interval_ms: int = Field(
        1000,
        ge=10,
        le=600_000,
        description="How often offsets commit. at-least-once: at most this often while records "
        "are in flight, at once when none is (a crash redoes at most this much work); "
        "exactly-once: how often the open transaction commits (the latency a read_committed "
        "reader sees).",
    )
    transaction_timeout_seconds: int = Field(
        60,
        ge=1,
        le=900,
        description="exactly-once only: how long a transaction may stay open before the broker "
        "aborts it (a sink outage that long: the worker then starts again in place with a new "
        "producer, from the committed offsets); at most the broker's transaction.max.timeout.ms.",
    )
    transactional_id: str | None = Field(
        None,
        description="exactly-once only: the producer's transactional id, stable across restarts "
        "of one instance and unique among instances [default: GROUP_ID-HOSTNAME].",
    )
    sink_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a Kafka or Redis write, or an offset commit, may take before it "
        "counts as failed (a commit at most MODSTREAM_SHUTDOWN_GRACE_SECONDS too, never under "
        "5 s: SIGTERM waits for one in progress).",
    )

    # --- Redis -----------------------------------------------------------------------------
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis URL (redis:// or rediss:// for TLS; may hold user and password).",
    )
    redis_password: SecretStr | None = Field(None, description="Redis password, if not in the URL.")
    redis_ssl_cafile: Path | None = Field(None, description="CA bundle for Redis TLS.")
    redis_key_prefix: str = Field("modstream:verdict:", description="Prefix of verdict hash keys.")
    redis_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=0, description="Time to live of a verdict in Redis; 0 keeps it forever."
    )

    # --- Batching and model ----------------------------------------------------------------
    model_dir: Path = Field(DEFAULT_ARTIFACT_DIR, description="Model artifact directory.")
    model_watch_interval_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="How often the artifact at MODSTREAM_MODEL_DIR is checked for a change "
        "(a symlink flip) to hot-swap it; 0 turns the check off (SIGHUP still reloads).",
    )
    device: str = Field(
        "auto",
        description="Where inference runs: auto, cpu, cuda or cuda:N; auto picks CUDA when "
        "present (the CPU for a CPU-only backend).",
    )
    backend: Backend = Field(
        "torch",
        description="Inference backend: torch, torch-int8 (dynamic int8, CPU) or onnx "
        "(ONNX Runtime, CPU; needs the onnx extra).",
    )
    max_windows: int = Field(
        64,
        ge=2,
        le=1024,
        description="Most tokens scored per long post, in model-length windows' worth; a "
        "longer post keeps its head, tail and evenly spaced rows between.",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="CPU threads for the model in all (shared by its replicas); 0 uses the "
        "container's CPU quota.",
    )
    model_replicas: int = Field(
        0,
        ge=0,
        le=64,
        description="Batches scored at once, each on its own thread with an equal share of the "
        "model's CPU threads; 0: on the CPU one per thread, up to 4; on a GPU one.",
    )
    # 32: on the CPU a batch of 32 tweets scores as fast a post as one of 64 (model-only,
    # bf16 with AMX and fp32 with AVX2 alike) and holds half the activations; with 64 the
    # worker peaked at 1,062-1,078 MiB in fp32, with 32 at 987-990 MiB (same speed or better).
    # A GPU wants more: the GPU Deployment sets 64.
    batch_max_size: int = Field(32, ge=1, le=4096, description="Most posts in one micro-batch.")
    batch_max_wait_ms: int = Field(
        50, ge=0, le=60_000, description="Longest a post waits for its batch, from the first post."
    )
    batch_token_budget: int = Field(
        8192,
        ge=16,
        description="Most padded tokens (size x longest) in the model at once: each of its "
        "replicas' micro-batches gets an equal part.",
    )
    batch_max_padding: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Most of a micro-batch's padded tokens that may be padding; posts that "
        "would pad it more wait for the next batch (1: no limit, e.g. on a GPU, where "
        "padding costs little and each batch has a fixed cost).",
    )
    policy_block_fake: float | None = Field(
        None, ge=0, le=1, description="Override: block when P(fake) reaches this."
    )
    policy_review_fake: float | None = Field(
        None, ge=0, le=1, description="Override: review when P(fake) reaches this."
    )
    policy_review_negative: float | None = Field(
        None, ge=0, le=1, description="Override: review when P(negative) reaches this."
    )
    max_event_bytes: int = Field(
        64 * 1024, ge=256, description="Records larger than this go to the dead-letter topic."
    )

    # --- Privacy ---------------------------------------------------------------------------
    pseudonym_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_PSEUDONYM_KEY),
        description="Key of the keyed hash that pseudonymises author ids. Set it in "
        "production: `run` and `replay` warn while it is the default, which anyone can hash "
        "ids with.",
    )
    store_text: bool = Field(False, description="Write the post text into verdicts.")

    # --- Operations ------------------------------------------------------------------------
    metrics_host: str = Field("0.0.0.0", description="Address of the metrics/health server.")
    metrics_port: int = Field(9400, ge=0, le=65535, description="Port of /metrics; 0 disables.")
    shutdown_grace_seconds: float = Field(
        20.0,
        ge=0,
        description="Time to finish the batch in hand after SIGTERM, counted from the signal.",
    )
    startup_timeout_seconds: float = Field(
        0.0,
        ge=0,
        description="How long `modstream run` waits at start for Redis and Kafka to answer "
        "(unready meanwhile) before it exits with status 3; 0 waits for ever.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or any(":" not in s for s in servers):
            raise ValueError("expected a comma-separated list of host:port")
        return ",".join(servers)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        parse_device(value)  # ValueError names what is accepted
        return value.strip().lower()

    @field_validator("pseudonym_key")
    @classmethod
    def _check_pseudonym_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _check_sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and self.kafka_sasl_mechanism is None:
            raise ValueError("kafka_sasl_mechanism is required with a SASL security protocol")
        if self.backend in CPU_ONLY_BACKENDS and parse_device(self.device).kind == "cuda":
            raise ValueError(f"backend {self.backend} runs on the CPU only, not {self.device}")
        if len({self.input_topic, self.output_topic, self.dlq_topic}) != 3:
            raise ValueError("input_topic, output_topic and dlq_topic must all differ")
        return self

    @property
    def txn_id(self) -> str:
        """The exactly-once producer's transactional id."""
        return self.transactional_id or f"{self.group_id}-{socket.gethostname()}"

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka_bootstrap_servers.split(",")

    @property
    def development_key(self) -> bool:
        """Whether author ids are pseudonymised with the key every copy of the source has."""
        return self.pseudonym_key.get_secret_value() == DEVELOPMENT_PSEUDONYM_KEY


def load_settings(env_file: Path | None = None, **overrides: object) -> Settings:
    """Build the settings, turning pydantic's error into one that names each bad variable."""
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"--env-file {env_file}: no such file")
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg,arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":  # a line of the env file: named as written
                problems.append(f"{loc.upper()} (in {env_file}): not a setting{_did_you_mean(loc)}")
                continue
            name = f"MODSTREAM_{loc.upper()}" if loc else "settings"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``MODSTREAM_*`` variables of the environment that name no setting (a misspelt one is
    otherwise ignored, and its setting keeps its default), each with a near name if any."""
    env = os.environ if environ is None else environ
    known = {f"MODSTREAM_{name.upper()}" for name in Settings.model_fields}
    return [
        f"{var}: not a setting{_did_you_mean(var)}"
        for var, value in sorted(env.items())
        if var.upper().startswith("MODSTREAM_")
        and var.upper() not in known
        and not _service_link(var.upper(), value)
    ]


def _service_link(name: str, value: str) -> bool:
    """Whether ``name`` is a variable Kubernetes made for a Service (NAME_PORT only with the
    URL it holds, so that a misspelt MODSTREAM_METRIC_PORT=9400 is still warned about)."""
    if _SERVICE_LINK.match(name):
        return True
    return name.endswith("_PORT") and bool(_SERVICE_LINK_URL.match(value))


def _did_you_mean(name: str) -> str:
    bare = name.upper().removeprefix("MODSTREAM_").lower()
    near = difflib.get_close_matches(bare, list(Settings.model_fields), n=1, cutoff=0.75)
    return f" (did you mean MODSTREAM_{near[0].upper()}?)" if near else ""


def describe_settings() -> str:
    """A table of every setting for ``--help`` and the README."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):  # the defaults are no secrets; set values are
            default = default.get_secret_value()
        rows.append(f"  MODSTREAM_{name.upper():<34} {field.description} [default: {default}]")
    return "\n".join(rows)
