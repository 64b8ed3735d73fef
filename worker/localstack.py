"""The project's local Kafka + Redis stack (deploy/local/stack.sh), seen from Python: used
by ``modstream demo`` and by the integration tests when no endpoints are given."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "local" / "stack.sh"
ENV_FILE = ROOT / ".stack" / "env"


def running() -> bool:
    return (
        STACK.is_file()
        and subprocess.run(["bash", str(STACK), "status"], capture_output=True).returncode == 0
    )


def up() -> dict[str, str]:
    """Start the stack if needed (idempotent) and return its endpoints."""
    if not STACK.is_file():
        raise SystemExit(
            "no local stack here: set MODSTREAM_KAFKA_BOOTSTRAP_SERVERS and MODSTREAM_REDIS_URL"
        )
    subprocess.run(["bash", str(STACK), "up"], check=True)
    return endpoints()


def down() -> None:
    subprocess.run(["bash", str(STACK), "down"], check=False)


def endpoints() -> dict[str, str]:
    """The ``export NAME=value`` lines of .stack/env, as a mapping."""
    env = {}
    for line in ENV_FILE.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        if value:
            env[key.strip()] = value.strip().strip("'\"")
    return env
