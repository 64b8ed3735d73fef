"""Device strings (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and the CPU share this process
may use (affinity and cgroup quota). No torch here: the settings validate with it."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_DEVICE = re.compile(r"(auto|cpu|cuda)(?::(\d{1,3}))?")

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A parsed device string: ``kind`` and, for ``cuda:N``, the index."""

    kind: Literal["auto", "cpu", "cuda"]
    index: int | None = None


def parse_device(text: str) -> DeviceSpec:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; ValueError for anything else."""
    match = _DEVICE.fullmatch(text.strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    kind: Literal["auto", "cpu", "cuda"] = match.group(1)  # type: ignore[assignment]
    index = int(match.group(2)) if match.group(2) is not None else None
    return DeviceSpec(kind, index)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs the cgroup quota allows (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``);
    None when there is no quota or no cgroup file to read."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    except (OSError, ValueError):
        pass
    for sub in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota_us = int((root / sub / "cpu.cfs_quota_us").read_text())
            period_us = int((root / sub / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity set, capped by the cgroup quota (rounded
    up: a quota of 1.5 CPUs keeps two threads busy between throttles)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


Backend = Literal["torch", "torch-int8", "onnx"]
CPU_ONLY_BACKENDS = frozenset({"torch-int8", "onnx"})
