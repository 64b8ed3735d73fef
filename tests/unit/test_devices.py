"""Device strings and the CPU share read from cgroup files (no torch, no hardware)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.devices import DeviceSpec, available_cpus, cgroup_cpu_limit, parse_device
from worker.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("auto", DeviceSpec("auto")),
        ("cpu", DeviceSpec("cpu")),
        ("cuda", DeviceSpec("cuda")),
        ("cuda:0", DeviceSpec("cuda", 0)),
        (" CUDA:3 ", DeviceSpec("cuda", 3)),
    ],
)
def test_device_strings_parse(text: str, spec: DeviceSpec) -> None:
    assert parse_device(text) == spec


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cpu:1", "auto:0", "cuda:-1", ""])
def test_bad_device_strings_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_device(text)


def test_settings_accept_a_cuda_index_and_refuse_nonsense() -> None:
    assert load_settings(device="cuda:1").device == "cuda:1"
    with pytest.raises(ConfigError, match="MODSTREAM_DEVICE"):
        load_settings(device="tpu")


def test_settings_refuse_a_cpu_only_backend_on_cuda() -> None:
    assert load_settings(backend="torch-int8", device="cpu").backend == "torch-int8"
    with pytest.raises(ConfigError, match="CPU"):
        load_settings(backend="torch-int8", device="cuda")


def test_settings_refuse_fewer_than_two_windows_and_negative_threads() -> None:
    with pytest.raises(ConfigError, match="MODSTREAM_MAX_WINDOWS"):
        load_settings(max_windows=1)
    with pytest.raises(ConfigError, match="MODSTREAM_TORCH_THREADS"):
        load_settings(torch_threads=-1)


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    write(tmp_path, "cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5


def test_cgroup_v2_without_quota(tmp_path: Path) -> None:
    write(tmp_path, "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    write(tmp_path, "cpu/cpu.cfs_quota_us", "400000\n")
    write(tmp_path, "cpu/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path) == 4.0


def test_cgroup_v1_without_quota(tmp_path: Path) -> None:
    write(tmp_path, "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None


def test_available_cpus_is_capped_by_the_quota_rounded_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(16)))
    write(tmp_path, "cpu.max", "250000 100000\n")
    assert available_cpus(tmp_path) == 3
    write(tmp_path, "cpu.max", "10000 100000\n")
    assert available_cpus(tmp_path) == 1  # never zero
    write(tmp_path, "cpu.max", "max 100000\n")
    assert available_cpus(tmp_path) == 16
