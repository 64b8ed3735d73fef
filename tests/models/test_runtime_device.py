"""Device and precision choice, and thread settings, on the CPU (CUDA faked where needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from models import runtime
from models.runtime import autocast_dtype, choose_device, configure_threads


def fake_gpus(
    monkeypatch: pytest.MonkeyPatch, count: int, capabilities: tuple[tuple[int, int], ...] = ()
) -> None:
    """``count`` GPUs, GPU i of compute capability ``capabilities[i]`` (default 9.0, an
    H100's). torch's own bf16 check answers yes for every GPU, as it does for one that only
    emulates bf16: the choice must not rest on it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    def capability(device: torch.device) -> tuple[int, int]:
        index = torch.device(device).index or 0
        return capabilities[index] if index < len(capabilities) else (9, 0)

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)


def test_auto_picks_cuda_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    assert choose_device("auto") == torch.device("cuda", 0)
    assert choose_device("cuda:1") == torch.device("cuda", 1)
    assert choose_device("cpu") == torch.device("cpu")


def test_auto_picks_the_cpu_for_a_cpu_only_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 1)
    assert choose_device("auto", cpu_only=True) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CPU-only"):
        choose_device("cuda", cpu_only=True)


def test_auto_picks_the_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 0)
    assert choose_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("asked", ["cuda", "cuda:0"])
def test_asking_for_absent_cuda_fails(monkeypatch: pytest.MonkeyPatch, asked: str) -> None:
    fake_gpus(monkeypatch, 0)
    with pytest.raises(RuntimeError, match="not available"):
        choose_device(asked)


def test_asking_for_a_gpu_index_beyond_the_count_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="2 GPUs"):
        choose_device("cuda:2")


def test_a_bad_device_string_fails() -> None:
    with pytest.raises(ValueError):
        choose_device("gpu")


@pytest.mark.parametrize(
    ("capability", "dtype"),
    [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16), ((7, 5), torch.float16)],
)
def test_cuda_autocasts_to_bf16_where_the_gpu_computes_it_else_fp16(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], dtype: torch.dtype
) -> None:
    fake_gpus(monkeypatch, 1, capabilities=(capability,))
    assert autocast_dtype(torch.device("cuda", 0)) == dtype


def test_the_precision_is_chosen_for_the_gpu_asked_for_not_gpu_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_gpus(monkeypatch, 2, capabilities=((7, 5), (8, 6)))  # a T4 beside an A10
    assert autocast_dtype(torch.device("cuda", 0)) == torch.float16
    assert autocast_dtype(torch.device("cuda", 1)) == torch.bfloat16


@pytest.mark.parametrize(("native", "dtype"), [(True, torch.bfloat16), (False, None)])
def test_cpu_autocasts_only_with_native_bf16(
    monkeypatch: pytest.MonkeyPatch, native: bool, dtype: torch.dtype | None
) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert autocast_dtype(torch.device("cpu")) == dtype


def test_the_bf16_probe_agrees_with_the_cpu_flags() -> None:
    flags = (torch.cpu._is_amx_tile_supported(), torch.cpu._is_avx512_bf16_supported())
    if not any(flags):
        assert runtime.cpu_has_native_bf16() is False
    else:
        assert runtime.cpu_has_native_bf16() is True  # autocast works where the flags say so


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("restore_threads")
def test_threads_follow_the_setting_or_the_cpu_share(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(runtime, "available_cpus", lambda: 3)
    assert configure_threads(0) == 3 and torch.get_num_threads() == 3
