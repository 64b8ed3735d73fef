"""The serving path of a real model: prepare/predict_encoded, windows, backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from models import DEFAULT_ARTIFACT_DIR, runtime
from models.artifact import read_config
from models.base import Encoded
from models.encoder import load_tokenizer
from models.preprocess import normalise
from models.runtime import (
    PROBABILITIES,
    Calibrated,
    Predictor,
    TracedRunner,
    load_model,
    load_predictor,
    make_runner,
    onednn_enabled,
    round_rows,
    serving_layout,
)
from models.windows import SURE_FAKE
from tests.models.golden import INPUTS

pytestmark = pytest.mark.model

LONG = " ".join(f"Sentence number {i} talks about the weather and the garden." for i in range(200))


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", precision="fp32")


def assert_close(
    a: list[dict[str, dict[str, float]]], b: list[dict[str, dict[str, float]]], tol: float
) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for task in y:
            for label, p in y[task].items():
                assert x[task][label] == pytest.approx(p, abs=tol), (task, label)


def test_prepare_gives_the_tokenizers_ids_for_texts_that_fit(predictor: Predictor) -> None:
    tokenizer = load_tokenizer()
    texts = [normalise(t) for t in INPUTS]  # prepare normalises first, as training did
    want = tokenizer(texts, truncation=True, max_length=predictor.max_length)["input_ids"]
    got = predictor.prepare(INPUTS)
    assert [list(e.windows[0]) for e in got] == want
    assert all(e.rows == 1 for e in got)


def test_a_long_text_is_cut_into_rows_that_keep_every_token(predictor: Predictor) -> None:
    tokenizer = load_tokenizer()
    [enc] = predictor.prepare([LONG])
    assert enc.rows > 1 and enc.tokens <= predictor.max_length
    assert enc.rows * enc.tokens <= predictor.max_windows * predictor.max_length
    cls, *content, sep = tokenizer(LONG)["input_ids"]
    assert all(w[0] == cls and w[-1] == sep for w in enc.windows)
    assert [t for w in enc.windows for t in w[1:-1]] == content  # in order, none lost


def test_the_window_cap_keeps_head_and_tail(predictor: Predictor) -> None:
    capped = load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", precision="fp32", max_windows=3)
    tokenizer = load_tokenizer()
    text = LONG * 5  # about 12,000 tokens
    [enc] = capped.prepare([text])
    assert enc.rows * enc.tokens <= 3 * capped.max_length
    _, *content, _ = tokenizer(text)["input_ids"]
    head, tail = enc.windows[0][1:-1], enc.windows[-1][1:-1]
    assert list(head) == content[: len(head)] and list(tail) == content[-len(tail) :]


def test_predict_is_prepare_then_predict_encoded(predictor: Predictor) -> None:
    texts = [*INPUTS, LONG]
    assert_close(predictor.predict(texts), predictor.predict_encoded(predictor.prepare(texts)), 0)
    assert predictor.predict([]) == [] and predictor.predict_encoded([]) == []


def test_a_batch_with_long_posts_scores_each_post_as_alone(predictor: Predictor) -> None:
    texts = [INPUTS[0], LONG, INPUTS[3], LONG + " Drinking bleach cures COVID-19.", ""]
    items = predictor.prepare(texts)
    together = predictor.predict_encoded(items)
    alone = [predictor.predict_encoded([item])[0] for item in items]
    assert_close(together, alone, 1e-5)


def test_a_post_is_scored_on_its_windows(predictor: Predictor) -> None:
    [enc] = predictor.prepare([LONG])
    windows = predictor.predict_encoded([Encoded((w,)) for w in enc.windows])
    [post] = predictor.predict_encoded([enc])
    fakest = max(w["misinformation"]["fake"] for w in windows)
    # corrected for the count, unless the model is sure of that window (models.windows)
    expected = fakest if fakest >= SURE_FAKE else max(0.0, 1.0 - len(windows) * (1.0 - fakest))
    assert post["misinformation"]["fake"] == pytest.approx(expected, abs=1e-6)
    mean_negative = sum(w["sentiment"]["negative"] for w in windows) / len(windows)
    assert post["sentiment"]["negative"] == pytest.approx(mean_negative, abs=1e-6)


def test_int8_backend_scores_close_to_fp32(predictor: Predictor) -> None:
    int8 = load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", backend="torch-int8")
    assert int8.amp_dtype is None  # autocast is for the torch backend only
    got, want = int8.predict(INPUTS), predictor.predict(INPUTS)
    diffs = []
    for a, b in zip(got, want, strict=True):
        for task, probs in b.items():
            assert sum(a[task].values()) == pytest.approx(1.0, abs=1e-5)
            diffs += [abs(a[task][label] - p) for label, p in probs.items()]
    assert sum(diffs) / len(diffs) < 0.1  # quantisation error, not a different model
    love, hate, _, bleach, ministry, *_ = got
    assert love["sentiment"]["positive"] > hate["sentiment"]["positive"]
    assert bleach["misinformation"]["fake"] > ministry["misinformation"]["fake"]


def test_onnx_backend_matches_fp32(predictor: Predictor) -> None:
    import onnxruntime  # noqa: F401  (the onnx extra, which `make test` installs: a missing one fails)

    onnx = load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", backend="onnx")
    texts = [*INPUTS, LONG]
    assert_close(onnx.predict(texts), predictor.predict(texts), 1e-4)


def test_cpu_only_backends_refuse_cuda() -> None:
    with pytest.raises(RuntimeError, match="CPU-only"):
        load_predictor(DEFAULT_ARTIFACT_DIR, device="cuda", backend="torch-int8")


def test_bf16_autocast_scores_close_to_fp32(predictor: Predictor) -> None:
    auto = load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", precision="auto")
    if auto.amp_dtype is None:
        pytest.skip("this CPU has no native bf16, so auto precision is fp32")
    assert auto.amp_dtype == torch.bfloat16
    assert_close(auto.predict(INPUTS), predictor.predict(INPUTS), 0.1)


def test_batches_rounded_to_a_shape_multiple_score_as_unrounded(predictor: Predictor) -> None:
    """Filler rows and extra padding columns are masked out and their rows dropped."""
    rounded = load_predictor(
        DEFAULT_ARTIFACT_DIR, device="cpu", precision="fp32", shape_multiple=(8, 48)
    )
    shapes: list[tuple[int, ...]] = []
    run = rounded._run
    rounded._run = lambda ids, mask: shapes.append(tuple(ids.shape)) or run(ids, mask)  # type: ignore[method-assign]
    texts = [*INPUTS[:5], LONG]
    assert_close(rounded.predict(texts), predictor.predict(texts), 1e-5)
    rows = sum(e.rows for e in rounded.prepare(texts))
    assert shapes[-1][0] == -(-rows // 8) * 8 and shapes[-1][0] > rows
    assert shapes[-1][1] % 48 == 0
    short = rounded.prepare(INPUTS[:3])
    assert_close(rounded.predict_encoded(short), predictor.predict_encoded(short), 1e-5)
    assert shapes[-1] == (4, 48)  # under 8 rows: the next power of two
    rounded.predict(INPUTS[:1])
    assert shapes[-1] == (1, 48)  # one post stays one row
    # rounding never goes past the model's length: 100 tokens pad to 128, not 144
    ids, mask = rounded._batch([[101] * 100])
    assert tuple(ids.shape) == (1, 128) and mask.sum().item() == 100
    # the shape the worker's padded-tokens metric counts is the one the batch gets
    assert rounded.padded_shape(1, 100) == (1, 128)
    assert rounded.padded_shape(3, 20) == (4, 48)
    assert tuple(rounded._batch([[101] * 20, [101] * 5, [101] * 7])[0].shape) == (4, 48)


def test_fp32_on_the_cpu_runs_without_onednn_and_bf16_rounds_its_shapes(
    predictor: Predictor,
) -> None:
    """oneDNN caches a kernel per batch shape, so fp32 stays off it and bf16 (which needs it)
    bounds its shapes; the process-wide flag is left as it was."""
    seen: list[bool] = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.append(torch.backends.mkldnn.enabled)
    )
    try:
        predictor.predict(INPUTS[:2])
    finally:
        hook.remove()
    assert seen and not any(seen)
    assert torch.backends.mkldnn.enabled
    assert predictor.shape_multiple == (1, 1)


def test_bf16_on_the_cpu_rounds_its_shapes_and_casts_its_linear_weights_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[torch.nn.Module] = []

    def keep(directory: Path, config: Any = None) -> tuple[torch.nn.Module, object, int]:
        model, tokenizer, pad_id = load_model(directory, config)
        loaded.append(model)
        return model, tokenizer, pad_id

    monkeypatch.setattr(runtime, "load_model", keep)  # the network load_predictor builds
    auto = load_predictor(DEFAULT_ARTIFACT_DIR, device="cpu", precision="auto")
    if auto.amp_dtype is None:
        pytest.skip("this CPU has no native bf16, so auto precision is fp32")
    assert auto.shape_multiple == (8, 16)
    # Cast once at load to the values autocast would cast them to on every call: the
    # same logits as autocast over the fp32 weights.
    (model,) = loaded
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and {m.weight.dtype for m in linears} == {torch.bfloat16}
    reference = served_network()
    ids, mask = auto._batch([w for e in auto.prepare(INPUTS) for w in e.windows])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(input_ids=ids, attention_mask=mask)
    got = auto._run(ids, mask)
    assert torch.equal(got[PROBABILITIES], expected[PROBABILITIES])


def test_the_cpu_runner_is_traced_and_computes_what_the_network_computes(
    predictor: Predictor,
) -> None:
    assert isinstance(predictor._run, TracedRunner)
    network = served_network()
    generator = torch.Generator().manual_seed(0)
    for rows, width in ((1, 1), (2, 7), (9, 128)):  # none the shape it was traced on
        ids = torch.randint(100, 30_000, (rows, width), generator=generator)
        lengths = torch.randint(1, width + 1, (rows,), generator=generator)
        mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()
        with torch.inference_mode():
            expected = network(input_ids=ids * mask, attention_mask=mask)
        got = predictor._run(ids * mask, mask)
        assert got.keys() == expected.keys() == {PROBABILITIES}
        assert torch.allclose(got[PROBABILITIES], expected[PROBABILITIES], atol=1e-5), (rows, width)


def served_network() -> Calibrated:
    """The shipped network as the Predictor serves it, untraced, in fp32."""
    config = read_config(DEFAULT_ARTIFACT_DIR)
    return Calibrated(
        load_model(DEFAULT_ARTIFACT_DIR)[0], list(config.labels), config.temperatures
    ).eval()


def test_served_probabilities_are_each_task_softmax_of_logits_over_its_temperature() -> None:
    network, config = load_model(DEFAULT_ARTIFACT_DIR)[0].eval(), read_config(DEFAULT_ARTIFACT_DIR)
    assert set(config.temperatures.values()) != {1.0}  # else dividing by them would not show
    tasks = list(config.labels)
    served = Calibrated(network, tasks, config.temperatures)
    ids = torch.tensor([[101, 2023, 2003, 2307, 102], [101, 2919, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        logits = network(input_ids=ids, attention_mask=mask)
        got = served(input_ids=ids, attention_mask=mask)[PROBABILITIES]
    expected = torch.cat(
        [torch.softmax(logits[t] / config.temperatures[t], dim=-1) for t in tasks], dim=-1
    )
    assert got.shape == (2, sum(len(config.labels[t]) for t in tasks))
    assert torch.allclose(got, expected, atol=1e-6)


class BranchesOnWidth(torch.nn.Module):
    """Python code that branches on a shape: a trace keeps the branch it took."""

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        scale = 2.0 if input_ids.shape[1] > 30 else 1.0
        return {"t": (input_ids * attention_mask).float().sum(1, keepdim=True) * scale}


class ReturnsText(torch.nn.Module):
    """Not traceable: a trace may only return tensors."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        return {"t": input_ids.float(), "note": "text"}


@pytest.mark.parametrize(
    ("network", "why", "served"),
    [
        # Served as it is, it takes the wide branch: 40 tokens x 2.
        (BranchesOnWidth(), "computes otherwise", lambda out: out["t"][0, 0] == 80.0),
        (ReturnsText(), "tracing it failed", lambda out: out["note"] == "text"),
    ],
)
def test_a_network_that_does_not_trace_faithfully_is_served_as_it_is(
    network: torch.nn.Module,
    why: str,
    served: Callable[[dict[str, Any]], bool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = make_runner(network, "torch", torch.device("cpu"), None)
    assert not isinstance(run, TracedRunner)
    assert why in caplog.text
    ids = torch.ones(2, 40, dtype=torch.long)
    assert served(run(ids, torch.ones_like(ids)))


def test_rows_round_to_powers_of_two_then_to_multiples_of_the_step() -> None:
    assert [round_rows(n, 8) for n in (1, 2, 3, 5, 8, 9, 16, 17, 64)] == [
        1,
        2,
        4,
        8,
        8,
        16,
        16,
        24,
        64,
    ]
    assert len({round_rows(n, 8) for n in range(1, 65)}) == 11
    assert [round_rows(n, 1) for n in (1, 3, 7)] == [1, 3, 7]


def test_the_serving_layout_splits_the_threads_between_replicas() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert serving_layout(cpu, 2) == (2, 1)  # two one-thread calls side by side
    assert serving_layout(cpu, 1) == (1, 1)
    assert serving_layout(cpu, 16) == (4, 4)  # at most 4 by default
    assert serving_layout(cpu, 16, replicas=1) == (1, 16)
    assert serving_layout(cpu, 3, replicas=2) == (2, 1)
    assert serving_layout(cpu, 2, replicas=8) == (8, 1)  # asked for: never under one thread
    assert serving_layout(gpu, 16) == (1, 16)
    with pytest.raises(ValueError):
        serving_layout(cpu, 0)


def test_onednn_switch_lets_calls_that_agree_overlap_and_makes_the_other_state_wait() -> None:
    """torch's oneDNN flag is one per process: two replicas both need it off; a call that
    needs it on waits until they finish; the state before is restored after the last."""
    assert torch.backends.mkldnn.enabled
    inside, release, on_seen = threading.Barrier(3), threading.Event(), []

    def off() -> None:
        with onednn_enabled(False):
            inside.wait(5)  # both replicas hold it off at once
            release.wait(5)
            assert not torch.backends.mkldnn.enabled

    def on() -> None:
        with onednn_enabled(True):
            on_seen.append(torch.backends.mkldnn.enabled)

    offs = [threading.Thread(target=off) for _ in range(2)]
    for t in offs:
        t.start()
    inside.wait(5)
    waiter = threading.Thread(target=on)
    waiter.start()
    time.sleep(0.05)
    assert on_seen == [] and not torch.backends.mkldnn.enabled  # it waits, nothing flipped
    release.set()
    for t in [*offs, waiter]:
        t.join(5)
    assert on_seen == [True]
    assert torch.backends.mkldnn.enabled


def test_replicas_score_side_by_side_each_on_its_share_of_threads() -> None:
    before = torch.get_num_threads()
    try:
        pair = load_predictor(
            DEFAULT_ARTIFACT_DIR, device="cpu", precision="fp32", threads=2, replicas=2
        )
        alone = pair.predict(INPUTS)
        assert (pair.concurrency, pair.threads) == (2, 1)
        results: dict[int, object] = {}
        counts: dict[int, int] = {}

        def replica(i: int) -> None:
            results[i] = pair.predict(INPUTS)
            counts[i] = torch.get_num_threads()  # the calling thread's own count

        threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert counts == {0: 1, 1: 1}
        for i in range(2):
            assert_close(results[i], alone, 1e-5)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(before)
