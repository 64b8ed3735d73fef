"""Serving: device and backend choice, threads, and the :class:`Predictor` the worker calls.

Backends (``MODSTREAM_BACKEND``): ``torch`` runs the model as loaded (with autocast where
the precision allows it); ``torch-int8`` runs it with its linear layers dynamically
quantised to int8 (CPU only); ``onnx`` runs an in-memory ONNX export in ONNX Runtime (CPU
only, optional extra). ``benchmarks/backends.py`` measures each against fp32.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from models.artifact import (
    ArtifactConfig,
    ArtifactError,
    load_tensors,
    read_config,
    read_config_and_version,
)
from models.base import Encoded, Scores
from models.bert import BertEncoder, BertShape
from models.classifier import MultiTaskClassifier, MultiTaskHeads
from models.devices import CPU_ONLY_BACKENDS, Backend, available_cpus, parse_device
from models.encoder import base_state, encoder_dir, encoder_sha256, serving_tokenizer
from models.preprocess import normalise
from models.windows import SENTENCE_END_TOKENS, fold_windows, split_windows

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = get_args(Backend)
Precision = Literal["auto", "fp32"]

# Model-length windows' worth of tokens scored per post at most (see models.windows).
DEFAULT_MAX_WINDOWS = 64

# Named outputs (raw logits per task, or PROBABILITIES from a :class:`Calibrated`
# network) from (input_ids, attention_mask) on the predictor's device.
Runner = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]

# The one output of a Calibrated network.
PROBABILITIES = "probabilities"


class Calibrated(nn.Module):
    """The network as served: each task's logits divided by its temperature and softmaxed,
    the tasks side by side in one (rows, labels of every task) tensor, in ``tasks`` order.

    Inside the network, so that a batch costs the host one call into the runner and one
    read of its result. Each torch call made from Python releases the interpreter lock;
    beside the worker's other threads (the consumer, the writer, kafka-python's network
    thread) a call that released it may wait a switch interval (5 ms) to get it back. The
    softmax and the mask made on the host took about 14 such calls a batch: on a network
    as fast as a GPU makes MiniLM, most of a batch's time in the worker (see
    ``benchmarks/HISTORY.md``, The interpreter lock between the stages)."""

    def __init__(
        self, network: nn.Module, tasks: Sequence[str], temperatures: Mapping[str, float]
    ) -> None:
        super().__init__()
        self.network = network
        self.tasks = list(tasks)
        self.temperatures = [float(temperatures.get(t, 1.0)) for t in self.tasks]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        logits = self.network(input_ids=input_ids, attention_mask=attention_mask)
        probabilities = [
            torch.softmax(logits[task].float() / temperature, dim=-1)
            for task, temperature in zip(self.tasks, self.temperatures, strict=True)
        ]
        return {PROBABILITIES: torch.cat(probabilities, dim=-1)}


def choose_device(preference: str = "auto", cpu_only: bool = False) -> torch.device:
    """``cuda``/``cuda:N`` when asked for (RuntimeError when absent), ``auto`` picks CUDA
    when present unless the backend runs on the CPU only; else the CPU."""
    spec = parse_device(preference)
    if spec.kind == "cpu" or (spec.kind == "auto" and (cpu_only or not torch.cuda.is_available())):
        return torch.device("cpu")
    if cpu_only:
        raise RuntimeError(f"device {preference!r} was asked for with a CPU-only backend")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} was asked for but CUDA is not available")
    index = spec.index if spec.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise RuntimeError(
            f"device {preference!r} was asked for but there are {torch.cuda.device_count()} GPUs"
        )
    return torch.device("cuda", index)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """The CPU computes bf16 natively (AMX or AVX-512 BF16) and autocast works on it: a
    small probe, because emulated bf16 is slower than fp32."""
    probes = [
        getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    ]
    if not any(p() for p in probes if callable(p)):
        return False
    try:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = torch.ones(8, 8) @ torch.ones(8, 8)
    except RuntimeError:
        return False
    return out.dtype == torch.bfloat16 and bool((out.float() == 8).all())


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on a GPU that computes it (compute capability 8, Ampere, and later), else fp16;
    bf16 on CPUs with native bf16; else none. Asked of ``device`` itself: torch's
    ``is_bf16_supported()`` asks the current device, and by default says yes for a GPU
    that only emulates bf16 (a T4), where fp16 is the faster and finer choice."""
    if device.type == "cuda":
        major, _minor = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def configure_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads to ``requested``, or (0) to the CPUs the container may
    use; one inter-op thread, since one model call runs at a time. Returns the count."""
    threads = requested if requested > 0 else available_cpus()
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work
        torch.set_num_interop_threads(1)
    return threads


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations
    quantised per batch), with torch's own eager API."""
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)  # the same, for quantised tensors
        from torch.ao.quantization import quantize_dynamic

        quantized: nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {nn.Linear}, dtype=torch.qint8
        )
    return quantized


def round_rows(n: int, step: int) -> int:
    """``n`` rounded up to a power of two below ``step``, else to a multiple of ``step``: a
    batch of one post stays one row, and a batch of 8 to 64 posts takes one of 8 shapes."""
    if n >= step:
        return -(-n // step) * step
    return 1 << (n - 1).bit_length()


class _OneDnnSwitch:
    """torch's oneDNN switch is one flag for the whole process, read by every thread. Calls
    that need it in the same state run together; a call that needs the other state waits
    until they are done. The state before the first of them is restored after the last."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users = 0
        self._state = True
        self._before = True

    @staticmethod
    def _set(enabled: bool) -> bool:
        set_flags = torch.backends.mkldnn.set_flags
        before: bool = set_flags(_enabled=enabled, _fp32_precision=None)[0]  # type: ignore[no-untyped-call]
        return before

    @contextlib.contextmanager
    def held(self, enabled: bool) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._users == 0 or self._state == enabled)
            if self._users == 0:
                self._before, self._state = self._set(enabled), enabled
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    self._set(self._before)
                    self._cond.notify_all()


_ONEDNN = _OneDnnSwitch()


def onednn_enabled(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """torch's oneDNN switch set for the block, then restored (its other flags untouched);
    safe when model replicas on several threads ask for it at once."""
    return _ONEDNN.held(enabled)


def serving_layout(device: torch.device, threads: int, replicas: int = 0) -> tuple[int, int]:
    """(model calls at once, torch threads each) for ``threads`` CPU threads in all.

    ``replicas`` 0 chooses: on the CPU one call per thread, up to 4 (torch splits each
    operation evenly over its threads and waits for the slowest, so two one-thread calls
    side by side beat one two-thread call, and lose less to the worker's other threads:
    1.2x the batched rate alone and 1.4x beside a process busy a third of a core, on 2
    cores); on a GPU one call.
    """
    if replicas < 0 or threads < 1:
        raise ValueError(f"need threads >= 1 and replicas >= 0, got {threads}, {replicas}")
    if replicas == 0:
        replicas = min(threads, 4) if device.type == "cpu" else 1
    return replicas, max(1, threads // replicas)


def cast_linear_layers(model: nn.Module, dtype: torch.dtype) -> None:
    """Every ``nn.Linear``'s weight and bias in ``dtype``, once. Autocast casts them to that
    dtype on every call anyway (a copy of every weight a batch), to the same values: the
    scores are unchanged, and a batch is faster (on one CPU thread with bf16: one post
    19 -> 10 ms, 64 posts 139 -> 125 ms) and holds no second copy of the weights."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.to(dtype)


def make_runner(
    model: nn.Module,
    backend: Backend,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    threads: int | None = None,
) -> Runner:
    """The function that runs one padded batch on ``backend`` (``threads``: ONNX Runtime's
    threads a call; torch's are the calling thread's)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend in CPU_ONLY_BACKENDS and device.type != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU only, not {device}")
    if backend == "onnx":
        from models.onnx_backend import onnx_runner

        return onnx_runner(model, threads or torch.get_num_threads())
    net = quantize_int8(model.eval()) if backend == "torch-int8" else model.to(device).eval()
    if amp_dtype is not None:
        cast_linear_layers(net, amp_dtype)

    # fp32 on the CPU runs on torch's own BLAS, not oneDNN: through oneDNN every new batch
    # shape added cached kernels and a worker's memory grew with its traffic (peak RSS 1,341
    # to 1,830 MiB over 300 batches of random sizes; 988 to 990 without it, at the same
    # speed). bf16 needs oneDNN (AMX); the Predictor bounds its shapes instead.
    onednn = not (device.type == "cpu" and backend == "torch" and amp_dtype is None)

    @contextlib.contextmanager
    def inference() -> Iterator[None]:
        autocast: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext()
            if amp_dtype is None
            else torch.autocast(device_type=device.type, dtype=amp_dtype)
        )
        with torch.inference_mode(), onednn_enabled(onednn), autocast:
            yield

    def run(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        with inference():
            out: dict[str, torch.Tensor] = net(input_ids=input_ids, attention_mask=attention_mask)
        return out

    return traced_runner(net, run, inference, device)


class TracedRunner:
    """Runs a TorchScript-traced network (see :func:`traced_runner`)."""

    def __init__(
        self,
        traced: Callable[[torch.Tensor, torch.Tensor], Any],
        inference: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self._traced = traced
        self._inference = inference

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        # The profiling executor re-specialises the graph for every new batch shape and
        # ran slower than eager; the flag is per thread, so each call sets it.
        with torch.jit.optimized_execution(False), self._inference():  # type: ignore[attr-defined]
            out: dict[str, torch.Tensor] = self._traced(input_ids, attention_mask)
        return out


# Token ids any BERT vocabulary holds; rows of several lengths, so the mask matters.
_TRACE_SHAPES = ((3, 24, (24, 17, 5)), (5, 40, (40, 33, 12, 7, 1)))


def _example(
    rows: int, width: int, lengths: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(100, 1000, (rows, width), generator=torch.Generator().manual_seed(rows))
    mask = (torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
    return (ids * mask).to(device), mask.to(device)


def traced_runner(
    net: nn.Module,
    eager: Runner,
    inference: Callable[[], contextlib.AbstractContextManager[None]],
    device: torch.device,
) -> Runner:
    """``eager``'s network traced with TorchScript, run by its simple executor: one call
    into C++ per batch instead of a Python call per layer and op. Each call then holds the
    GIL only to enter and leave, so model replicas and the worker's other threads stop
    queueing for it between ops: in paired runs on 2 cores (batches of 64, bf16), 6% more
    posts/s with one replica and 9% with two (eight rounds each, every one faster). On a
    GPU, where each op is a kernel launch of microseconds, every op that hands the lock to
    another thread may wait a switch interval (5 ms) to get it back: a tiny 6-layer network
    on the CPU, as fast as a GPU makes MiniLM, ran 40-48 posts/s eager and 1,158 traced beside
    a spinning Python thread (``benchmarks/HISTORY.md``, The interpreter lock between the
    stages).
    The trace is checked against ``eager`` on ``device``, on a batch of another shape;
    when tracing or the check fails, or the two differ (a network whose Python code
    branches on shapes), ``eager`` serves and a warning says so. ``torch.jit`` is
    deprecated upstream but kept in the pinned torch; without it, ``eager`` serves too.
    ``inference``: the contexts a call runs in (inference mode, autocast, oneDNN on or
    off), for the trace as for every call."""
    try:
        with inference(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation; tracer warnings
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                net, _example(*_TRACE_SHAPES[0], device), strict=False, check_trace=False
            )
        run = TracedRunner(traced, inference)
        probe = _example(*_TRACE_SHAPES[1], device)
        want, got = eager(*probe), run(*probe)
        same = want.keys() == got.keys() and all(
            want[k].shape == got[k].shape
            and torch.allclose(want[k].float(), got[k].float(), atol=1e-3, rtol=1e-3)
            for k in want
        )
    except Exception as exc:  # noqa: BLE001 - any failure: serve the network as it is
        log.warning("serving the network untraced: tracing it failed (%r)", exc)
        return eager
    if not same:
        log.warning("serving the network untraced: its trace computes otherwise on a probe")
        return eager
    return run


def special_tokens(tokenizer: Tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids the tokenizer puts before and after a text's own (``[CLS]``, ``[SEP]``)."""
    marker = "hello"
    bare: list[int] = tokenizer.encode(marker, add_special_tokens=False).ids
    full: list[int] = tokenizer.encode(marker).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return tuple(full[:start]), tuple(full[start + len(bare) :])
    raise ValueError("cannot find a text's tokens between the tokenizer's special tokens")


def sentence_end_ids(encoder: Any) -> frozenset[int]:
    """Ids of the tokens that end a sentence, as this tokenizer spells them."""
    ids = set()
    for mark in SENTENCE_END_TOKENS:
        tokens = encoder.encode(mark, add_special_tokens=False).ids
        if len(tokens) == 1:
            ids.add(tokens[0])
    return frozenset(ids)


class Predictor:
    """A loaded artifact ready to score texts: satisfies :class:`models.base.Classifier`.
    From ``config`` it takes the labels, temperatures, policy and window length; ``model``
    may be another network with the same heads (the benchmarks' fast network).

    ``prepare`` only reads a private copy of the Rust tokenizer (no truncation, no padding,
    never reconfigured), so any thread may call it. ``predict_encoded`` runs the backend;
    up to :attr:`concurrency` calls may run at once, each on its own thread (the weights are
    only read). :attr:`threads`: torch's CPU threads for each call, set on the calling
    thread (torch keeps the count per thread); None leaves the thread's setting alone.
    """

    def __init__(
        self,
        model: MultiTaskClassifier,
        tokenizer: Tokenizer,
        pad_id: int,
        config: ArtifactConfig,
        version: str,
        device: torch.device,
        precision: Precision = "auto",
        backend: Backend = "torch",
        max_windows: int = DEFAULT_MAX_WINDOWS,
        shape_multiple: tuple[int, int] | None = None,
        *,
        concurrency: int = 1,
        threads: int | None = None,
    ) -> None:
        if max_windows < 1:
            raise ValueError("max_windows must be at least 1")
        if concurrency < 1 or (threads is not None and threads < 1):
            raise ValueError(
                f"concurrency and threads must be at least 1: {concurrency}, {threads}"
            )
        self.device = device
        self.concurrency = concurrency
        self.threads = threads
        self.backend = backend
        use_amp = precision == "auto" and backend == "torch"
        self.amp_dtype = autocast_dtype(device) if use_amp else None
        cpu_torch = device.type == "cpu" and backend == "torch"
        # (rows, tokens) multiples each batch is padded to (rows under the first: a power of
        # two). bf16 on the CPU runs on oneDNN, whose cache of per-shape kernels grows with
        # every distinct shape: 11 row counts and 8 widths bound it (peak RSS 1,308-1,335 MiB
        # over 300 batches of random sizes, against 1,507-2,122) at no cost in speed.
        self._multiple = shape_multiple or ((8, 16) if cpu_torch and self.amp_dtype else (1, 1))
        self._labels = {t: list(names) for t, names in config.labels.items()}
        network = Calibrated(model, list(self._labels), config.temperatures)
        self._run = make_runner(network, backend, device, self.amp_dtype, threads)
        # Each task's labels and its columns in the runner's PROBABILITIES.
        self._columns: list[tuple[str, list[str], int, int]] = []
        start = 0
        for task, names in self._labels.items():
            self._columns.append((task, names, start, start + len(names)))
            start += len(names)
        self._pad_id = pad_id
        self._encoder = Tokenizer.from_str(tokenizer.to_str())  # a private copy
        self._encoder.no_truncation()  # the windows cut long posts (models.windows)
        self._encoder.no_padding()  # batches are padded by _batch
        self._prefix, self._suffix = special_tokens(self._encoder)
        self._enders = sentence_end_ids(self._encoder)
        self._policy = dict(config.policy)
        self._max_length = config.max_length
        # Content tokens one window holds, between the special tokens.
        self._window_body = config.max_length - len(self._prefix) - len(self._suffix)
        self._max_windows = max_windows
        self._version = version

    @property
    def version(self) -> str:
        return self._version

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def labels(self) -> Mapping[str, Sequence[str]]:
        return self._labels

    @property
    def policy(self) -> Mapping[str, float]:
        return self._policy

    @property
    def max_windows(self) -> int:
        return self._max_windows

    def prepare(self, texts: Sequence[str]) -> list[Encoded]:
        """Normalise and tokenise (no padding, no truncation); long texts become windows.

        Tokenised without character offsets (``encode_batch_fast``: 82 against 103 us of
        CPU a tweet); a text longer than one window is tokenised again with them, which
        :func:`split_windows` needs to find where its sentences end."""
        if not texts:
            return []
        normalised = [normalise(t) for t in texts]
        encodings = self._encoder.encode_batch_fast(normalised, add_special_tokens=False)
        long = [i for i, e in enumerate(encodings) if len(e.ids) > self._window_body]
        if long:
            again = self._encoder.encode_batch(
                [normalised[i] for i in long], add_special_tokens=False
            )
            for i, e in zip(long, again, strict=True):
                encodings[i] = e
        return [
            Encoded(
                split_windows(
                    e.ids,
                    e.offsets,
                    self._enders,
                    self._max_length,
                    self._prefix,
                    self._suffix,
                    self._max_windows,
                )
            )
            for e in encodings
        ]

    @property
    def shape_multiple(self) -> tuple[int, int]:
        return self._multiple

    def padded_shape(self, rows: int, width: int) -> tuple[int, int]:
        """``rows`` and ``width`` rounded up to ``shape_multiple`` (the width never past
        the model's length unless a row is longer): the shape :meth:`_batch` makes."""
        row_step, width_step = self._multiple
        padded_width = max(width, min(-(-width // width_step) * width_step, self._max_length))
        return round_rows(rows, row_step), padded_width

    def _batch(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows padded to the longest, and their attention mask, on the device; rows and
        width rounded up to ``shape_multiple`` (filler rows of one padding token). Built in
        numpy, which keeps the interpreter lock (see :class:`Calibrated`). On CUDA they go
        through pinned host memory and copy without blocking the host."""
        all_rows, width = self.padded_shape(len(rows), max(len(r) for r in rows))
        ids = np.full((all_rows, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((all_rows, width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        mask[len(rows) :, 0] = 1  # a filler row is one padding token
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        if self.device.type == "cuda":
            ids_t = ids_t.pin_memory().to(self.device, non_blocking=True)
            mask_t = mask_t.pin_memory().to(self.device, non_blocking=True)
        return ids_t, mask_t

    def _probabilities(self, rows: Sequence[Sequence[int]]) -> list[Scores]:
        """Calibrated probabilities per row (softmax of logits / temperature, computed in
        the network: :class:`Calibrated`)."""
        out = self._run(*self._batch(rows))[PROBABILITIES]
        # Reading the results back is the only point where the host waits for the device.
        values: list[list[float]] = out[: len(rows)].cpu().tolist()
        return [
            {task: dict(zip(names, row[a:b], strict=True)) for task, names, a, b in self._columns}
            for row in values
        ]

    def predict_encoded(self, items: Sequence[Encoded]) -> list[Scores]:
        """Score prepared posts: one padded batch of all their windows, folded back per post."""
        if not items:
            return []
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)  # this thread's count (an OpenMP setting)
        per_row = self._probabilities([w for item in items for w in item.windows])
        out: list[Scores] = []
        start = 0
        for item in items:
            out.append(fold_windows(per_row[start : start + item.rows]))
            start += item.rows
        if len(out) != len(items) or start != len(per_row):
            raise RuntimeError(f"{len(items)} posts in, {len(out)} results out")
        return out

    def predict(self, texts: Sequence[str]) -> list[Scores]:
        return self.predict_encoded(self.prepare(texts))


def check_base_encoder(directory: Path, config: ArtifactConfig) -> None:
    """Refuses an artifact trained on other base encoder weights than the installed ones."""
    actual = encoder_sha256(encoder_dir())
    if config.base_encoder_sha256 != actual:
        raise ArtifactError(
            f"{directory} was trained on encoder weights {config.base_encoder_sha256[:12]}, "
            f"but the installed {config.base_encoder} has {actual[:12]}"
        )


def encoder_weights(
    config: ArtifactConfig, tensors: Mapping[str, Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """An artifact's encoder weights under transformers' names, from its ``tensors``
    (:func:`models.artifact.load_tensors`): its own (mode "full"; widened to float32 when
    stored in half precision, since precision at run time is the Predictor's choice), the
    base encoder's with the artifact's LoRA adapters merged, or the base encoder's."""
    if config.mode == "full":
        return {k: v.float() if v.is_floating_point() else v for k, v in tensors["encoder"].items()}
    if config.mode == "lora":
        from models.adapters import merge_lora

        return merge_lora(base_state(), tensors["adapters"], config.lora or {})[0]
    return base_state()


def load_model(
    directory: Path, config: ArtifactConfig | None = None
) -> tuple[MultiTaskClassifier, Tokenizer, int]:
    """The artifact's network for serving (its encoder weights in a
    :class:`models.bert.BertEncoder`, and its heads), the tokenizer and its padding id.
    ``config``: the artifact's, if already read (read once, it cannot differ from the one
    the caller serves with)."""
    config = config or read_config(directory)
    check_base_encoder(directory, config)
    tensors = load_tensors(directory, config)
    shape = BertShape.read(encoder_dir() / "config.json")
    try:
        encoder = BertEncoder.from_bert(shape, encoder_weights(config, tensors))
    except ValueError as exc:
        raise ArtifactError(f"{directory}: {exc}") from None
    heads = MultiTaskHeads(shape.hidden_size, config.head_hidden, config.labels)
    heads.load_state_dict(tensors["heads"])
    tokenizer, pad_id = serving_tokenizer()
    return MultiTaskClassifier(encoder, heads).eval(), tokenizer, pad_id


def load_predictor(
    directory: Path,
    device: str = "auto",
    precision: Precision = "auto",
    *,
    backend: Backend = "torch",
    max_windows: int = DEFAULT_MAX_WINDOWS,
    threads: int | None = None,
    shape_multiple: tuple[int, int] | None = None,
    replicas: int = 1,
) -> Predictor:
    """Load an artifact for serving on ``device`` (auto | cpu | cuda | cuda:N) with
    ``backend``. ``threads``: torch's CPU threads in all (0 = the container's CPU share,
    None = leave torch's setting alone); ``replicas``: model calls that may run at once,
    sharing those threads (0 = :func:`serving_layout` chooses)."""
    chosen = choose_device(device, cpu_only=backend in CPU_ONLY_BACKENDS)
    total = configure_threads(threads) if threads is not None else torch.get_num_threads()
    concurrency, share = serving_layout(chosen, total, replicas)
    # Nothing asked (threads None, one call at a time): every thread keeps its own setting.
    each = None if threads is None and concurrency == 1 else share
    config, version = read_config_and_version(directory)
    config.check_calibrated(directory)
    model, tokenizer, pad_id = load_model(directory, config)
    predictor = Predictor(
        model,
        tokenizer,
        pad_id,
        config,
        version,
        chosen,
        precision,
        backend,
        max_windows,
        shape_multiple,
        concurrency=concurrency,
        threads=each,
    )
    log.info(
        "loaded model %s on %s (backend %s, autocast %s, %d call(s) at once on %d thread(s) "
        "each, up to %d windows a post)",
        predictor.version,
        chosen,
        backend,
        predictor.amp_dtype,
        concurrency,
        each or torch.get_num_threads(),
        max_windows,
    )
    return predictor
