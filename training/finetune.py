"""Fine-tuning the encoder with the heads: LoRA adapters (through peft) or every weight.

One shared encoder pass feeds both heads; each minibatch holds one task's examples, and the
tasks' minibatches are interleaved at random. Batches are bucketed by length so padding stays
small. Mixed precision on a GPU; resumable checkpoints; early stopping on the mean of the
tasks' validation metrics.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from models.classifier import MultiTaskClassifier, MultiTaskHeads
from models.encoder import load_encoder, load_tokenizer
from models.preprocess import normalise
from models.runtime import autocast_dtype, choose_device
from training.data import TaskData, source_group
from training.metrics import classification_report, primary_metric
from training.train import TrainConfig, TrainResult, class_weights, seed_everything

log = logging.getLogger(__name__)
LORA_TARGETS = ("query", "key", "value", "dense")


@dataclass(frozen=True, slots=True)
class FinetuneConfig:
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    encoder_lr: float = 5e-4  # LoRA; full fine-tuning wants about 5e-5
    warmup: float = 0.06
    max_train_per_task: int | None = None
    per_source_epoch: int | None = None  # cap per source group and epoch (several sources only)
    # with per_source_epoch: also draw smaller groups up to it (repeats), so every source
    # group weighs the same in each epoch
    balance_sources: bool = False
    stop_after: int | None = None  # end after this many epochs of the --epochs LR schedule
    checkpoint_dir: Path | None = None
    resume: bool = False
    # best mean validation metric, the final epoch, or the mean of the last epochs' weights
    select: Literal["best", "last", "average"] = "best"
    average_last: int = 2  # epochs averaged by select="average"
    # "auto": bf16/fp16 autocast where the device computes it natively (CUDA; CPUs with AMX or
    # AVX-512 BF16, where a training step is about 1.6x faster); "fp32": none
    precision: Literal["auto", "fp32"] = "auto"


@dataclass
class Encoded:
    ids: list[list[int]]
    targets: torch.Tensor
    groups: list[str]  # source group of each example


def encode(task: TaskData, split: str, tokenizer: Any, max_length: int) -> Encoded:
    examples = getattr(task, split)
    ids = tokenizer([normalise(e.text) for e in examples], truncation=True, max_length=max_length)
    index = {label: i for i, label in enumerate(task.labels)}
    return Encoded(
        ids["input_ids"],
        torch.tensor([index[e.label] for e in examples]),
        [source_group(e.source) for e in examples],
    )


def epoch_indices(
    enc: Encoded, per_source: int | None, rng: random.Random, balance: bool = False
) -> list[int]:
    """The examples one epoch trains on: everything, or, where a task has several source
    groups, at most ``per_source`` drawn afresh from each group, so a large data set (17,000
    celebrity headlines) does not drown a small one (6,000 COVID tweets). With ``balance``
    a smaller group is drawn up to ``per_source`` too: all of it, then random repeats, so
    every group has the same weight in the epoch."""
    by_group: dict[str, list[int]] = {}
    for i, group in enumerate(enc.groups):
        by_group.setdefault(group, []).append(i)
    if per_source is None or len(by_group) < 2:
        return list(range(len(enc.ids)))
    out: list[int] = []
    for group in sorted(by_group):
        idx = by_group[group]
        if len(idx) > per_source:
            out += rng.sample(idx, per_source)
        elif balance:
            out += idx + rng.choices(idx, k=per_source - len(idx))
        else:
            out += idx
    return out


def subsample(task: TaskData, limit: int | None, seed: int) -> TaskData:
    """A stratified random subset of the training split (for CPU budgets)."""
    if limit is None or len(task.train) <= limit:
        return task
    rng = random.Random(seed)
    by_label: dict[str, list[Any]] = {}
    for e in task.train:
        by_label.setdefault(e.label, []).append(e)
    keep = []
    for items in by_label.values():
        keep += rng.sample(items, max(1, round(limit * len(items) / len(task.train))))
    rng.shuffle(keep)
    return TaskData(task.task, task.labels, keep, task.val)


def pad(batch: Sequence[list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(x) for x in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    if device.type == "cuda":
        return {
            "input_ids": ids.pin_memory().to(device, non_blocking=True),
            "attention_mask": mask.pin_memory().to(device, non_blocking=True),
        }
    return {"input_ids": ids, "attention_mask": mask}


def bucketed_batches(
    data: Mapping[str, Encoded],
    batch_size: int,
    rng: random.Random,
    per_source: int | None = None,
    balance: bool = False,
) -> list[tuple[str, list[int]]]:
    """Minibatches of similar length, one task each, in random order."""
    batches = []
    for task, enc in data.items():
        order = epoch_indices(enc, per_source, rng, balance)
        rng.shuffle(order)
        chunk = batch_size * 50
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: len(enc.ids[i]))
            batches += [(task, part[i : i + batch_size]) for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def build_model(
    tasks: Sequence[TaskData], cfg: TrainConfig, ft: FinetuneConfig
) -> tuple[MultiTaskClassifier, list[nn.Parameter], list[nn.Parameter]]:
    """The classifier, its encoder parameters to train and its head parameters."""
    base = load_encoder()
    hidden = int(base.config.hidden_size)
    encoder: nn.Module = base
    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        encoder = get_peft_model(
            encoder,
            LoraConfig(
                r=ft.lora_r,
                lora_alpha=ft.lora_alpha,
                lora_dropout=ft.lora_dropout,
                target_modules=list(LORA_TARGETS),
            ),
        )
    heads = MultiTaskHeads(
        hidden,
        cfg.head_hidden,
        {t.task: t.labels for t in tasks},
        dropout=cfg.dropout,
    )
    model = MultiTaskClassifier(encoder, heads)
    enc_params = [p for p in encoder.parameters() if p.requires_grad]
    return model, enc_params, list(heads.parameters())


@torch.no_grad()
def val_logits(
    model: MultiTaskClassifier,
    data: Mapping[str, Encoded],
    device: torch.device,
    batch: int = 128,
    amp: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    model.eval()
    out = {}
    for task, enc in data.items():
        order = sorted(range(len(enc.ids)), key=lambda i: len(enc.ids[i]))
        parts = []
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                emb = model.embed(**pad([enc.ids[i] for i in idx], device))
                parts.append(model.heads.heads[task](emb).float().cpu())
        logits = torch.cat(parts)
        out[task] = torch.empty_like(logits)
        out[task][order] = logits  # back to input order
    return out


def finetune(
    tasks: Sequence[TaskData], cfg: TrainConfig, ft: FinetuneConfig
) -> tuple[TrainResult, MultiTaskClassifier]:
    seed_everything(cfg.seed)
    started = time.perf_counter()
    device = choose_device("auto")
    tasks = [subsample(t, ft.max_train_per_task, cfg.seed) for t in tasks]
    tokenizer = load_tokenizer()
    train = {t.task: encode(t, "train", tokenizer, cfg.max_length) for t in tasks}
    val = {t.task: encode(t, "val", tokenizer, cfg.max_length) for t in tasks}
    model, enc_params, head_params = build_model(tasks, cfg, ft)
    model.to(device)
    losses = {
        t.task: nn.CrossEntropyLoss(
            weight=class_weights(train[t.task].targets, len(t.labels)).to(device)
        )
        for t in tasks
    }
    opt = torch.optim.AdamW(
        [{"params": enc_params, "lr": ft.encoder_lr}, {"params": head_params, "lr": cfg.lr}],
        weight_decay=cfg.weight_decay,
    )
    rng = random.Random(cfg.seed)

    def draw(rng: random.Random) -> list[tuple[str, list[int]]]:
        return bucketed_batches(train, cfg.batch_size, rng, ft.per_source_epoch, ft.balance_sources)

    steps_per_epoch = len(draw(random.Random(0)))
    total = steps_per_epoch * cfg.epochs
    from transformers import get_linear_schedule_with_warmup

    sched = get_linear_schedule_with_warmup(opt, int(ft.warmup * total), total)  # type: ignore[no-untyped-call]
    state: dict[str, Any] = (
        _resume(model, opt, sched, ft)
        if ft.resume
        else {"epoch": 0, "best": -1.0, "stale": 0, "history": []}
    )
    for _ in range(state["epoch"]):
        # Replay the data order of finished epochs.
        draw(rng)
    amp = autocast_dtype(device) if ft.precision == "auto" else None
    log.info("training on %s, autocast %s", device, amp)
    best_state: dict[str, torch.Tensor] | None = None
    recent: dict[int, dict[str, torch.Tensor]] = {}  # epoch -> trainable weights
    prior_seconds = float(state.get("seconds", 0.0))  # training time of earlier runs (resume)
    last_epoch = min(cfg.epochs, ft.stop_after or cfg.epochs)
    for epoch in range(state["epoch"], last_epoch):
        batches = draw(rng)
        loss = _epoch(model, train, batches, losses, opt, sched, device, amp, epoch)
        logits = val_logits(model, val, device, amp=amp)
        scores = {
            t.task: primary_metric(
                t.task,
                classification_report(
                    val[t.task].targets.numpy(), torch.softmax(logits[t.task], -1).numpy(), t.labels
                ),
            )
            for t in tasks
        }
        mean = sum(scores.values()) / len(scores)
        state["history"].append({"epoch": epoch + 1, "train_loss": loss, **scores})
        log.info("epoch %d loss %.4f val %s", epoch + 1, loss, scores)
        state["epoch"] = epoch + 1
        state["seconds"] = prior_seconds + time.perf_counter() - started
        if mean > state["best"]:
            state["best"], state["stale"] = mean, 0
            best_state = trainable_state(model)
            _save(model, opt, sched, state, ft, best=True)
        else:
            state["stale"] += 1
        _save(model, opt, sched, state, ft, best=False)
        recent[epoch + 1] = trainable_state(model)
        if state["stale"] >= cfg.patience:
            break
    if ft.select == "average":
        _load_trainable(model, _average_last(recent, state["epoch"], ft))
    if ft.select == "best":
        if best_state is None and ft.checkpoint_dir is not None:  # resumed after the best epoch
            best_state = load_file(ft.checkpoint_dir / "best.safetensors")
        if best_state is not None:
            _load_trainable(model, best_state)
    best_val = val_logits(model, val, device, amp=amp)
    model.cpu()
    result = TrainResult(
        model.heads,
        best_val,
        {t: val[t].targets for t in val},
        state["history"],
        prior_seconds + time.perf_counter() - started,
    )
    return result, model


def _epoch(
    model: MultiTaskClassifier,
    train: Mapping[str, Encoded],
    batches: Sequence[tuple[str, list[int]]],
    losses: Mapping[str, nn.Module],
    opt: torch.optim.Optimizer,
    sched: Any,
    device: torch.device,
    amp: torch.dtype | None,
    epoch: int,
) -> float:
    model.train()
    total, seen, started = 0.0, 0, time.perf_counter()
    bar = tqdm(batches, desc=f"epoch {epoch + 1}", unit="batch", mininterval=5)
    for n, (task, idx) in enumerate(bar, 1):
        enc = train[task]
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            emb = model.embed(**pad([enc.ids[i] for i in idx], device))
            logits = model.heads.heads[task](emb)
        loss = losses[task](logits.float(), enc.targets[idx].to(device))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        total += loss.detach().item()
        seen += len(idx)
        rate = seen / (time.perf_counter() - started)
        bar.set_postfix(loss=f"{total / n:.4f}", ex_s=f"{rate:.1f}", refresh=False)
    return total / max(1, len(batches))


def trainable_state(model: MultiTaskClassifier) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    # clone: on the CPU, detach().cpu() would share storage with the live parameters, and a
    # kept state (the best epoch, the epochs to average) would change as training goes on
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def _load_trainable(model: MultiTaskClassifier, state: Mapping[str, torch.Tensor]) -> None:
    missing = set(state) - set(model.state_dict())
    if missing:
        raise ValueError(f"checkpoint does not fit the model: {sorted(missing)[:3]}")
    model.load_state_dict(dict(state), strict=False)


def _save(
    model: MultiTaskClassifier,
    opt: torch.optim.Optimizer,
    sched: Any,
    state: dict[str, Any],
    ft: FinetuneConfig,
    best: bool,
) -> None:
    if ft.checkpoint_dir is None:
        return
    ft.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        trainable_state(model),
        ft.checkpoint_dir / ("best.safetensors" if best else "last.safetensors"),
    )
    if not best:
        save_file(trainable_state(model), ft.checkpoint_dir / f"epoch-{state['epoch']}.safetensors")
        torch.save(
            {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
            ft.checkpoint_dir / "optimizer.pt",
        )
        (ft.checkpoint_dir / "state.json").write_text(json.dumps(state, indent=1))


def average_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of several checkpoints of the same weights."""
    if not states:
        raise ValueError("nothing to average")
    return {
        k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype)
        for k in states[0]
    }


def _average_last(
    recent: Mapping[int, Mapping[str, torch.Tensor]], last: int, ft: FinetuneConfig
) -> dict[str, torch.Tensor]:
    """Mean weights of the last ``ft.average_last`` epochs: those trained in this run, and
    from the checkpoint directory those of a run this one resumed."""
    epochs = range(max(1, last - ft.average_last + 1), last + 1)
    states = []
    for epoch in epochs:
        if epoch in recent:
            states.append(recent[epoch])
        elif (
            ft.checkpoint_dir is not None
            and (f := ft.checkpoint_dir / f"epoch-{epoch}.safetensors").is_file()
        ):
            states.append(load_file(f))
        else:
            raise SystemExit(f"--select average: the weights of epoch {epoch} are not available")
    log.info("exporting the mean weights of epochs %s", list(epochs))
    return average_states(states)


def _resume(
    model: MultiTaskClassifier, opt: torch.optim.Optimizer, sched: Any, ft: FinetuneConfig
) -> dict[str, Any]:
    d = ft.checkpoint_dir
    if d is None or not (d / "state.json").is_file():
        raise SystemExit("--resume needs a --checkpoint-dir holding a previous run's checkpoint")
    _load_trainable(model, load_file(d / "last.safetensors"))
    # Our own file, and weights_only refuses anything but tensors and plain containers.
    extra = torch.load(d / "optimizer.pt", weights_only=True)
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    state: dict[str, Any] = json.loads((d / "state.json").read_text())
    log.info("resuming after epoch %d (best %.4f)", state["epoch"], state["best"])
    return state


def lora_tensors(model: MultiTaskClassifier) -> dict[str, torch.Tensor]:
    """The adapters alone, with peft's key names (what models.adapters.merge_lora reads)."""
    from peft import get_peft_model_state_dict

    return {
        k: v.detach().cpu().contiguous()
        for k, v in get_peft_model_state_dict(model.encoder).items()
    }
