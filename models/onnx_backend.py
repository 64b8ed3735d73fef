"""The ONNX Runtime backend (optional extra ``modstream[onnx]``): the loaded model exported
to ONNX in memory at start-up and run by ONNX Runtime's CPU execution provider."""

from __future__ import annotations

import importlib
import io
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# Raw logits per task from (input_ids, attention_mask), both (rows, width) int64.
Runner = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]

OPSET = 17


def _import_onnxruntime() -> Any:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise RuntimeError(
            "backend 'onnx' needs ONNX Runtime: pip install 'modstream[onnx]'"
        ) from exc


def export_onnx(model: nn.Module) -> tuple[bytes, list[str]]:
    """The model as ONNX bytes with dynamic batch and sequence axes, and its output names
    (the task names, in the order the model returns them)."""
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        names = list(model(ids, mask))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in torch 2.9+ and warns about traced shape
        # checks that are constant for an encoder (no cache, mask as long as the input).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to any binary file
            input_names=["input_ids", "attention_mask"],
            output_names=names,
            dynamic_axes={
                "input_ids": {0: "rows", 1: "width"},
                "attention_mask": {0: "rows", 1: "width"},
                **{n: {0: "rows"} for n in names},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue(), names


def onnx_runner(model: nn.Module, threads: int) -> Runner:
    """A runner over an ONNX Runtime session of ``model`` using ``threads`` intra-op threads."""
    ort = _import_onnxruntime()
    data, names = export_onnx(model.float().eval())
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def run(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        outs = session.run(names, feeds)
        return {n: torch.from_numpy(o) for n, o in zip(names, outs, strict=True)}

    return run
