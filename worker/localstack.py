"""The project's local Kafka + Redis stack (deploy/local/stack.sh), seen from Python: used
by ``modstream demo`` and by the integration tests when no endpoints are given.

``secure=True`` selects the secure profile beside it (``stack.sh up --secure``: Kafka over
SASL_SSL with a SCRAM-SHA-512 user, Redis with an ACL user), whose endpoints include the
credentials."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "local" / "stack.sh"
ENV_FILE = ROOT / ".stack" / "env"
SECURE_ENV_FILE = ROOT / ".stack-secure" / "env"


def _args(command: str, secure: bool) -> list[str]:
    return ["bash", str(STACK), command, *(["--secure"] if secure else [])]


def running(secure: bool = False) -> bool:
    return (
        STACK.is_file()
        and subprocess.run(_args("status", secure), capture_output=True).returncode == 0
    )


def up(secure: bool = False) -> dict[str, str]:
    """Start the stack if needed (idempotent) and return its endpoints."""
    if not STACK.is_file():
        raise SystemExit(
            "no local stack here: set MODSTREAM_KAFKA_BOOTSTRAP_SERVERS and MODSTREAM_REDIS_URL"
        )
    subprocess.run(_args("up", secure), check=True)
    return endpoints(secure)


def down(secure: bool = False) -> None:
    subprocess.run(_args("down", secure), check=False)


def endpoints(secure: bool = False) -> dict[str, str]:
    """The ``export NAME=value`` lines of .stack/env (or .stack-secure/env), as a mapping."""
    env = {}
    for line in (SECURE_ENV_FILE if secure else ENV_FILE).read_text().splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        if value:
            env[key.strip()] = value.strip().strip("'\"")
    return env
