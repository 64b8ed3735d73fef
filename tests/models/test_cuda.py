"""The model on a GPU: device choice, autocast dtype, batched == single. Skipped without CUDA
(the device-choice logic itself is tested on the CPU in test_runtime_device.py)."""

from __future__ import annotations

import pytest
import torch

from models import DEFAULT_ARTIFACT_DIR
from models.runtime import (
    Predictor,
    TracedRunner,
    autocast_dtype,
    choose_device,
    load_predictor,
)
from tests.models.golden import INPUTS

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

LONG = " ".join(f"Sentence number {i} is about the weather and the garden." for i in range(150))


@pytest.fixture(scope="module")
def on_gpu() -> Predictor:
    return load_predictor(DEFAULT_ARTIFACT_DIR, device="cuda")


def test_auto_and_indexed_devices_pick_the_gpu() -> None:
    assert choose_device("auto").type == "cuda"
    assert choose_device("cuda:0") == torch.device("cuda", 0)


def test_autocast_is_bf16_where_the_gpu_has_it_else_fp16(on_gpu: Predictor) -> None:
    major, _minor = torch.cuda.get_device_capability(on_gpu.device)
    want = torch.bfloat16 if major >= 8 else torch.float16
    assert autocast_dtype(on_gpu.device) == want == on_gpu.amp_dtype


def test_a_batch_gives_the_same_scores_as_one_by_one_on_the_gpu(on_gpu: Predictor) -> None:
    texts = [*INPUTS, LONG]
    items = on_gpu.prepare(texts)
    together = on_gpu.predict_encoded(items)
    for item, batched in zip(items, together, strict=True):
        [alone] = on_gpu.predict_encoded([item])
        for task in alone:
            for label, p in alone[task].items():
                assert batched[task][label] == pytest.approx(p, abs=2e-2)  # half precision


def test_the_gpu_agrees_with_the_cpu(on_gpu: Predictor) -> None:
    on_cpu = load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", precision="fp32")
    for gpu, cpu in zip(on_gpu.predict(INPUTS), on_cpu.predict(INPUTS), strict=True):
        for task in cpu:
            for label, p in cpu[task].items():
                assert gpu[task][label] == pytest.approx(p, abs=5e-2)  # bf16/fp16 vs fp32


def test_the_gpu_runs_the_network_traced(on_gpu: Predictor) -> None:
    """One call into C++ a batch, checked at load against the network as it is on the GPU
    (the scores themselves: the tests above)."""
    assert isinstance(on_gpu._run, TracedRunner)
