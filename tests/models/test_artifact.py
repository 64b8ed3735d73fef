"""Training on a small synthetic set, export, load, and the loader's refusals."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from models.artifact import ArtifactError, artifact_version, read_config, read_config_and_version
from models.runtime import load_predictor
from training.data import Example, task_data
from training.export import export_artifact
from training.train import TrainConfig, train_frozen

pytestmark = pytest.mark.model

GOOD = ["love", "wonderful", "great", "happy", "amazing", "fantastic"]
BAD = ["hate", "awful", "terrible", "angry", "horrible", "disgusting"]
FAKE = [
    "miracle cure hidden by doctors",
    "they are hiding the truth, share now",
    "secret plot microchips in vaccines",
]
REAL = [
    "the ministry reported new cases today",
    "the council meets on tuesday",
    "officials published the weekly figures",
]


def synthetic_tasks() -> list:  # type: ignore[type-arg]
    sent_train, sent_val, mis_train, mis_val = [], [], [], []
    for i in range(60):
        g, b = GOOD[i % len(GOOD)], BAD[i % len(BAD)]
        target = sent_train if i < 45 else sent_val
        target.append(Example(f"what a {g} day number {i}", "positive"))
        target.append(Example(f"such a {b} day number {i}", "negative"))
        target.append(Example(f"the bus arrives at {i} past", "neutral"))
        mtarget = mis_train if i < 45 else mis_val
        mtarget.append(Example(f"{FAKE[i % 3]} #{i}", "fake"))
        mtarget.append(Example(f"{REAL[i % 3]} #{i}", "real"))
    return [
        task_data("sentiment", sent_train, sent_val, ("negative", "neutral", "positive")),
        task_data("misinformation", mis_train, mis_val, ("real", "fake")),
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    tasks = synthetic_tasks()
    cfg = TrainConfig(epochs=30, batch_size=32, lr=3e-3, patience=30, head_hidden=32)
    from training.embed import embed_texts

    vectors = {
        t.task: {
            s: embed_texts([e.text for e in getattr(t, s)], use_cache=False, progress=False)
            for s in ("train", "val")
        }
        for t in tasks
    }
    result = train_frozen(tasks, cfg, vectors)
    out = tmp_path_factory.mktemp("artifact")
    export_artifact(out, tasks, result, cfg)
    return out, result


def test_training_lowers_the_loss_and_beats_chance(trained) -> None:  # type: ignore[no-untyped-def]
    _, result = trained
    history = result.history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    best = max(history, key=lambda h: h["sentiment"] + h["misinformation"])
    assert best["sentiment"] > 0.8  # chance: 1/3 macro recall
    assert best["misinformation"] > 0.8  # chance: about 0.5 F1


def test_export_then_load_gives_identical_predictions(trained) -> None:  # type: ignore[no-untyped-def]
    directory, result = trained
    predictor = load_predictor(directory, device="cpu", precision="fp32")
    config = read_config(directory)
    texts = ["what a love day number 3", "secret plot microchips in vaccines #99"]
    from training.embed import embed_texts

    with torch.inference_mode():
        vecs = embed_texts(texts, use_cache=False, progress=False)
        direct = {
            t: torch.softmax(h(vecs) / config.temperatures[t], -1)
            for t, h in result.heads.heads.items()
        }
    got = predictor.predict(texts)
    for i in range(len(texts)):
        for task, labels in config.labels.items():
            for j, label in enumerate(labels):
                assert got[i][task][label] == pytest.approx(float(direct[task][i, j]), abs=1e-5)
    assert predictor.version.startswith("ms-")
    card = (directory / "MODEL_CARD.md").read_text()
    assert "| misinformation | overall |" in card and "| sentiment | overall |" in card
    validation = json.loads((directory / "metrics.json").read_text())["validation"]
    assert validation["sentiment"]["overall"]["n"] == 45  # 15 per label in the val split
    assert set(config.policy) == {"block_fake", "review_fake", "review_negative"}


def copy_artifact(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_a_full_artifact_serves_its_own_encoder_weights(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """mode "full" ships every encoder weight; the loader must use them, not the base's."""
    from models.artifact import load_tensors, save_artifact
    from models.encoder import load_encoder
    from models.runtime import load_model

    frozen = trained[0]
    config = read_config(frozen)
    state = load_encoder().state_dict()
    word = "embeddings.word_embeddings.weight"
    state[word] = state[word] * 0.5  # a visibly different encoder
    heads = load_tensors(frozen, config)["heads"]
    save_artifact(
        tmp_path / "full",
        config.model_copy(update={"mode": "full"}),
        {"heads": heads, "encoder": state},
    )
    model, _, _ = load_model(tmp_path / "full")
    torch.testing.assert_close(model.encoder.state_dict()[word], state[word])
    text = ["what a wonderful day number 3"]
    full, base = (
        load_predictor(tmp_path / "full", device="cpu"),
        load_predictor(frozen, device="cpu"),
    )
    assert full.predict(text) != base.predict(text)


def test_a_full_encoder_stored_in_half_precision_serves_in_float32(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Training stores a full encoder as float16; the loader widens it, so the CPU never
    computes in float16, and the scores stay those of the float32 weights."""
    from models.artifact import load_tensors, save_artifact
    from models.encoder import load_encoder
    from models.runtime import load_model
    from training.export import half_precision

    frozen = trained[0]
    config = read_config(frozen).model_copy(update={"mode": "full"})
    heads = load_tensors(frozen, read_config(frozen))["heads"]
    state = load_encoder().state_dict()
    save_artifact(tmp_path / "f32", config, {"heads": heads, "encoder": state})
    save_artifact(tmp_path / "f16", config, {"heads": heads, "encoder": half_precision(state)})
    assert (tmp_path / "f16" / "encoder.safetensors").stat().st_size < 0.55 * (
        tmp_path / "f32" / "encoder.safetensors"
    ).stat().st_size
    model, _, _ = load_model(tmp_path / "f16")
    word = "embeddings.word_embeddings.weight"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    torch.testing.assert_close(model.encoder.state_dict()[word], state[word].half().float())
    texts = ["what a wonderful day number 3", "secret plot microchips in vaccines"]
    p32 = load_predictor(tmp_path / "f32", device="cpu", precision="fp32").predict(texts)
    p16 = load_predictor(tmp_path / "f16", device="cpu", precision="fp32").predict(texts)
    for a, b in zip(p32, p16, strict=True):
        for task in a:
            for label in a[task]:
                assert abs(a[task][label] - b[task][label]) < 5e-3


def test_rescore_recalibrates_weights_trained_elsewhere_and_keeps_their_facts(
    trained, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """``modstream train --rescore``: a full artifact from another machine gets its
    temperatures, policy, metrics and card made here; its weights and training facts stay."""
    from models.artifact import load_tensors, save_artifact
    from models.encoder import load_encoder
    from training.export import rescore_artifact

    frozen = trained[0]
    source = read_config(frozen)
    heads = load_tensors(frozen, source)["heads"]
    facts = {"hardware": "cuda", "seed": 1, "seconds": 301.1}
    elsewhere = source.model_copy(
        update={"mode": "full", "policy": {}, "temperatures": {}, "training": facts}
    )
    encoder = load_encoder().state_dict()
    save_artifact(tmp_path / "gpu", elsewhere, {"heads": heads, "encoder": encoder})

    rescore_artifact(tmp_path / "gpu", tmp_path / "out", synthetic_tasks())
    config = read_config(tmp_path / "out")
    assert set(config.policy) == {"block_fake", "review_fake", "review_negative"}
    assert set(config.temperatures) == {"sentiment", "misinformation"}
    assert {k: config.training[k] for k in facts} == facts and "rescored_at" in config.training
    stored = load_tensors(tmp_path / "out", config)
    word = "embeddings.word_embeddings.weight"
    assert stored["encoder"][word].dtype == torch.float16
    torch.testing.assert_close(stored["encoder"][word].float(), encoder[word].half().float())
    torch.testing.assert_close(stored["heads"], heads)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["validation"]["sentiment"]["overall"]["n"] == 45
    assert (tmp_path / "out" / "MODEL_CARD.md").is_file()


def test_tampered_weights_are_refused(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = copy_artifact(trained[0], tmp_path / "a")
    data = bytearray((d / "heads.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (d / "heads.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_predictor(d, device="cpu")


def test_pickle_weights_are_refused(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = copy_artifact(trained[0], tmp_path / "b")
    (d / "heads.bin").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ArtifactError, match="pickle"):
        load_predictor(d, device="cpu")


def test_a_config_pointing_at_pickle_is_refused(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = copy_artifact(trained[0], tmp_path / "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg["files"] = {"heads.ckpt.zip": "0" * 64}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match=r"only \.safetensors"):
        load_predictor(d, device="cpu")


def test_a_mismatched_base_encoder_is_refused(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = copy_artifact(trained[0], tmp_path / "d")
    cfg = json.loads((d / "config.json").read_text())
    cfg["base_encoder_sha256"] = "f" * 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="encoder weights"):
        load_predictor(d, device="cpu")


def test_a_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no config\.json"):
        load_predictor(tmp_path, device="cpu")


def _edit_config(directory: Path, **changes: object) -> None:
    cfg = json.loads((directory / "config.json").read_text())
    cfg.update(changes)
    (directory / "config.json").write_text(json.dumps(cfg))


def test_a_weights_file_outside_the_artifact_is_refused(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = copy_artifact(trained[0], tmp_path / "e")
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((d / "heads.safetensors").read_bytes())
    files = json.loads((d / "config.json").read_text())["files"]
    _edit_config(d, files={"../elsewhere.safetensors": files["heads.safetensors"]})
    with pytest.raises(ArtifactError, match="must be in the artifact's directory"):
        load_predictor(d, device="cpu")


def test_a_config_that_names_no_heads_file_is_an_artifact_error(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """It used to hash nothing and fail with KeyError('heads'), which start-up did not
    turn into a message."""
    d = copy_artifact(trained[0], tmp_path / "f")
    _edit_config(d, files={})
    with pytest.raises(ArtifactError, match=r"names no \['heads.safetensors'\]"):
        load_predictor(d, device="cpu")


@pytest.mark.parametrize(
    ("temperatures", "message"),
    [
        ({"sentiment": 1.2}, "temperatures for"),
        ({"sentiment": 1.2, "misinformation": -0.5}, "positive"),
    ],
)
def test_temperatures_must_cover_every_task_and_be_positive(
    trained,
    tmp_path: Path,
    temperatures: dict[str, float],
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    d = copy_artifact(trained[0], tmp_path / "g")
    _edit_config(d, temperatures=temperatures)
    with pytest.raises(ArtifactError, match=message):
        read_config(d)


def test_the_version_comes_from_the_config_read(trained) -> None:  # type: ignore[no-untyped-def]
    config, version = read_config_and_version(trained[0])
    assert config == read_config(trained[0]) and version == artifact_version(trained[0])


def test_an_artifact_without_temperatures_is_not_served(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Weights trained elsewhere come without them (``--rescore`` makes them): served, every
    task would be uncalibrated against thresholds fitted on calibrated scores."""
    d = copy_artifact(trained[0], tmp_path / "h")
    _edit_config(d, temperatures={})
    with pytest.raises(ArtifactError, match="not calibrated"):
        load_predictor(d, device="cpu")
