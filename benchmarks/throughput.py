"""Throughput and latency, side by side in one run, on the same posts (issue 7):

1. the shipped model, one post at a time;
2. what a user writes first: two separate Hugging Face text-classification models (one
   per task, fresh heads on the same MiniLM: speed only), batches of 32 padded to 128;
3. the best model-only batched path: the shipped model, tokenised once, posts sorted by
   length and cut into batches under the token budget (sizes 32 and 64, one batch at a time
   on every thread or side by side as the worker's replicas run them; the fastest wins);
4. the worker end to end from a backlog (Kafka -> model -> Redis + Kafka -> commit);
5. ``modstream replay`` of that same backlog (issue 9: at least 0.9x of 4), timed the same
   way, with the same model;
6. the worker open loop at half the rate of 4, with p50/p99 event-to-verdict latency;
7. the pipeline's own ceiling: the worker from a backlog of ten times the posts (at least
   20,000) with a model that scores nothing (``ScoresNothing``), and the CPU a post takes
   besides the model's;
8. a fast network (``fast_network``: MiniLM's depth at hidden size 32, random weights, about
   what a GPU makes of MiniLM), model-only on the worker's replicas and the worker with it
   from the same backlog as 7: on a CPU, what the rest of the worker costs a fast model;
9. the worker as several processes of one consumer group (``--processes``; by default one
   per model replica on the CPU, each on its share of the threads, at least 2; 4 on a
   GPU) with the models of 4, 7 and 8, each from a backlog of that row's posts times the
   processes: what adding processes on one machine buys where one process's interpreter
   lock sets the pace (``processes_phase``);
10. the peak resident memory of a real ``modstream run`` process working through the same
   posts from a backlog, and of a process that only imports torch.

Posts: the tweets of ../shared/data/sentiment/val.jsonl when present, else synthetic ones.
Writes JSON and Markdown under reports/bench/ and prints the table. Needs the local stack
(``make bench`` starts it).

    python benchmarks/throughput.py [--posts 2000] [--batch 64] [--out reports/bench]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# This checkout's packages (worker, models) and its development tooling (modstream_dev,
# which is not installed) come first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from processes_phase import Kind, in_processes  # benchmarks/ is on the path
from replay_phase import replay_backlog
from worker_phases import (
    ScoresNothing,
    WorkerRun,
    bench_settings,
    fast_network,
    from_backlog,
    import_torch_rss_mib,
    open_loop,
    worker_process_rss_mib,
)

from models import DEFAULT_ARTIFACT_DIR
from models.base import Encoded
from models.devices import available_cpus
from models.runtime import load_predictor
from worker.config import Settings
from worker.produce import synthetic_events

ROOT = Path(__file__).resolve().parent.parent
TWEETS = ROOT.parent / "shared" / "data" / "sentiment" / "val.jsonl"
# The pipeline's ceiling runs on this many times the posts, at least CEILING_POSTS: at
# 1,000-1,500 posts/s on 2 cores, 2,000 posts would be over in under 2 s.
CEILING_TIMES, CEILING_POSTS = 10, 20_000
# One post at a time is timed on at most this many posts, before the worker's phases and
# again after its backlog (the slowest row: half of it each time).
ONE_AT_A_TIME_POSTS = 2000


def load_texts(n: int) -> tuple[list[str], str]:
    """``n`` posts: the validation tweets (repeated in order when ``n`` is larger, as a GPU
    needs to run long enough to time), else synthetic ones."""
    if TWEETS.exists():
        with TWEETS.open(encoding="utf-8") as fh:
            tweets = [str(json.loads(line)["text"]) for line in fh if line.strip()]
        texts = list(itertools.islice(itertools.cycle(tweets), n))
        repeated = f", the {len(tweets)} repeated" if n > len(tweets) else ""
        source = f"{n} tweets from {TWEETS.relative_to(ROOT.parent)}{repeated}"
    else:
        texts = [str(e["text"]) for e in itertools.islice(synthetic_events(3), n)]
        source = f"{n} synthetic posts (no {TWEETS})"
    return texts, source


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def timed(fn: Callable[[], object], posts: int) -> float:
    started = time.perf_counter()
    fn()
    return posts / (time.perf_counter() - started)


def one_at_a_time(predictor: Any, texts: list[str], posts: int = ONE_AT_A_TIME_POSTS) -> float:
    predictor.predict(texts[:1])  # warm-up
    sample = texts[:posts]
    return timed(lambda: [predictor.predict([t]) for t in sample], len(sample))


def bracketed(before: float, after: float) -> dict[str, float]:
    """A baseline timed before and after the phase it is compared with: these machines'
    speed drifts by a fifth to a third within the hour, so the mean of the two stands for
    the machine's speed during the phase better than either alone."""
    return {"rate": (before + after) / 2, "before": before, "after": after}


def length_bucketed(encoded: list[Encoded], size: int, budget: int) -> list[list[Encoded]]:
    """Sorted by length, cut at ``size`` posts or when rows x longest would pass ``budget``."""
    batches: list[list[Encoded]] = []
    current: list[Encoded] = []
    rows = 0
    for item in sorted(encoded, key=lambda e: e.tokens):
        if current and (len(current) >= size or (rows + item.rows) * item.tokens > budget):
            batches.append(current)
            current, rows = [], 0
        current.append(item)
        rows += item.rows
    return batches + ([current] if current else [])


@contextmanager
def threads_each(predictor: Any, threads: int | None) -> Iterator[None]:
    """The predictor's calls on ``threads`` torch threads each for the block."""
    before, predictor.threads = predictor.threads, threads
    try:
        yield
    finally:
        predictor.threads = before


def best_batched(
    predictor: Any, texts: list[str], size: int, budget: int, replicas: int = 1
) -> tuple[float, float]:
    """Posts/s of a model-only path, tokenisation included, ``replicas`` batches at a time
    (each on its own thread, as the worker's replicas); and the mean seconds one batch took."""
    durations: list[float] = []

    def score(batches: Iterator[list[Encoded]]) -> None:
        for batch in batches:
            started = time.perf_counter()
            predictor.predict_encoded(batch)
            durations.append(time.perf_counter() - started)

    def run() -> None:
        batches = length_bucketed(predictor.prepare(texts), size, budget)
        queue = iter(batches)  # each replica takes the next batch when it is free
        lock = threading.Lock()

        def take() -> Iterator[list[Encoded]]:
            while True:
                with lock:
                    batch = next(queue, None)
                if batch is None:
                    return
                yield batch

        workers = [threading.Thread(target=score, args=(take(),)) for _ in range(replicas)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    score(iter([predictor.prepare(texts[:size])] * replicas))  # warm-up, on this thread
    run()  # and on the replicas' threads, whose thread counts are set on their first call
    durations.clear()
    rate = timed(run, len(texts))
    return rate, sum(durations) / len(durations)


def two_hf_models(texts: list[str], device: torch.device, batch: int = 32) -> float:
    """Two AutoModelForSequenceClassification (3 and 2 labels) on the local MiniLM, fresh
    heads, every batch padded to 128: the first thing a user writes."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from models.encoder import encoder_dir

    hf_logging.set_verbosity_error()  # "newly initialised heads" is expected: speed only
    path = str(encoder_dir())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    models = [
        AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=n, local_files_only=True, use_safetensors=True
        )
        .to(device)
        .eval()
        for n in (3, 2)
    ]

    def run() -> None:
        with torch.inference_mode():
            for i in range(0, len(texts), batch):
                enc = tokenizer(
                    texts[i : i + batch],
                    padding="max_length",
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                ).to(device)
                for model in models:
                    model(**enc).logits.softmax(-1).tolist()

    run_once = texts[:batch]
    with torch.inference_mode():
        for model in models:
            model(
                **tokenizer(
                    run_once,
                    padding="max_length",
                    max_length=128,
                    truncation=True,
                    return_tensors="pt",
                ).to(device)
            )
    return timed(run, len(texts))


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=int, default=2000)
    p.add_argument("--batch", type=int, default=Settings.model_fields["batch_max_size"].default)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    p.add_argument(
        "--device",
        default=Settings.model_fields["device"].default,
        help="where every row runs, the worker's included (auto: CUDA when present)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        help="worker processes in the processes phase (0: one per model replica on the CPU, "
        "at least 2; 4 on a GPU)",
    )
    args = p.parse_args()
    env = {k: os.environ[k] for k in ("MODSTREAM_KAFKA_BOOTSTRAP_SERVERS", "MODSTREAM_REDIS_URL")}
    defaults = Settings.model_fields
    budget = int(defaults["batch_token_budget"].default)
    max_wait_ms = float(defaults["batch_max_wait_ms"].default)

    texts, source = load_texts(args.posts)
    # Laid out as the worker lays it out: its replicas, each on its share of the threads.
    predictor = load_predictor(DEFAULT_ARTIFACT_DIR, device=args.device, threads=0, replicas=0)
    replicas, each = predictor.concurrency, predictor.threads
    all_threads = replicas * (each or 1)
    info = {**machine(), "torch_threads": all_threads, "replicas": replicas}
    print(
        f"{source}; {info['cpu']}, {info['cores']} cores, torch threads {all_threads} "
        f"({replicas} model replica(s) in the worker)"
    )
    results: dict[str, Any] = {"machine": info, "posts": source, "batch_max_size": args.batch}

    single_posts = ONE_AT_A_TIME_POSTS // 2
    with threads_each(predictor, all_threads):
        single_before = one_at_a_time(predictor, texts, single_posts)
    print(f"one post at a time             {single_before:8.1f} posts/s")
    variants: dict[tuple[int, int], tuple[float, float]] = {}
    for size in sorted({32, 64, args.batch}):  # the best of these sizes, whatever the worker's
        with threads_each(predictor, all_threads):
            variants[(size, 1)] = best_batched(predictor, texts, size, budget)
        if replicas > 1:  # each with its part of the budget, as the worker's batcher
            variants[(size, replicas)] = best_batched(
                predictor, texts, size, budget // replicas, replicas
            )
    for (size, n), (rate, batch_s) in variants.items():
        print(
            f"model-only, batches of {size:3d}, {n} at a time  {rate:8.1f} posts/s, "
            f"{batch_s * 1000:.0f} ms a batch"
        )
    best_size, best_n = max(variants, key=lambda k: variants[k][0])
    results["model_only_variants"] = [
        {"batch": size, "at_once": n, "rate": rate, "batch_seconds": batch_s}
        for (size, n), (rate, batch_s) in variants.items()
    ]
    # One batch's time as the worker runs it (its batch size, on one replica's threads).
    results["batch_seconds"] = variants[(args.batch, replicas)][1]

    backlog_settings = bench_settings(env, args.batch, device=args.device)
    backlog = from_backlog(predictor, texts, backlog_settings)
    results["worker_backlog"] = summary(backlog)
    print(f"worker from a backlog          {backlog.rate:8.1f} posts/s  {stages(backlog)}")
    # The baselines again, right after the backlog phase (see bracketed).
    best_threads = all_threads if best_n == 1 else each
    with threads_each(predictor, best_threads):
        best_after = best_batched(predictor, texts, best_size, budget // best_n, best_n)[0]
    with threads_each(predictor, all_threads):
        single_after = one_at_a_time(predictor, texts, single_posts)
    results["best_model_only"] = {
        **bracketed(variants[(best_size, best_n)][0], best_after),
        "batch": best_size,
        "at_once": best_n,
    }
    results["one_at_a_time_bracket"] = bracketed(single_before, single_after)
    results["one_at_a_time"] = results["one_at_a_time_bracket"]["rate"]
    print(
        f"after it: best model-only      {best_after:8.1f} posts/s, one post at a time "
        f"{single_after:.1f} posts/s (the baselines: the mean of before and after)"
    )
    replay, replayed = replay_backlog(predictor, backlog_settings, len(texts))
    results["replay_backlog"] = {
        **summary(replay),
        "vs_worker_backlog": replay.rate / backlog.rate,
        "loop_seconds": replayed["seconds"],  # the replay's own time, its first batch included
    }
    print(
        f"replay of that backlog         {replay.rate:8.1f} posts/s  "
        f"({replay.rate / backlog.rate:.2f}x the worker) {stages(replay)}"
    )
    half = open_loop(predictor, texts, env, args.batch, rate=backlog.rate / 2)
    results["worker_half_capacity"] = {**summary(half), "offered_rate": backlog.rate / 2}
    print(
        f"worker at {backlog.rate / 2:.0f} posts/s (half)    p50 {half.quantile_ms(0.5):.0f} ms, "
        f"p99 {half.quantile_ms(0.99):.0f} ms  {stages(half)}"
    )
    repeats = max(CEILING_TIMES, -(-CEILING_POSTS // len(texts)))
    ceiling = from_backlog(
        ScoresNothing(predictor), texts * repeats, bench_settings(env, args.batch)
    )
    results["pipeline_ceiling"] = {
        **summary(ceiling),
        "posts": len(texts) * repeats,
        "cpu_us_per_post": ceiling.cpu_us_per_post,
    }
    results["worker_backlog"]["cpu_us_per_post"] = backlog.cpu_us_per_post
    print(
        f"worker, a model that scores nothing {ceiling.rate:8.1f} posts/s, "
        f"{ceiling.cpu_us_per_post:.0f} us of CPU a post  {stages(ceiling)}"
    )
    fast = fast_network(DEFAULT_ARTIFACT_DIR, predictor)
    fast_alone = best_batched(fast, texts, args.batch, budget // replicas, replicas)[0]
    fast_run = from_backlog(fast, texts * repeats, bench_settings(env, args.batch))
    results["fast_network"] = {
        **summary(fast_run),
        "posts": len(texts) * repeats,
        "model_only": fast_alone,
        "vs_model_only": fast_run.rate / fast_alone,
        "cpu_us_per_post": fast_run.cpu_us_per_post,
    }
    print(
        f"a fast network: model-only {fast_alone:.1f} posts/s, the worker with it "
        f"{fast_run.rate:.1f} ({fast_run.rate / fast_alone:.2f}x)  {stages(fast_run)}"
    )
    results["processes"] = processes_phase(texts, repeats, env, args, predictor, results)
    results["harness_peak_rss_mib"] = peak_rss_mib()
    rss = worker_process_rss_mib(texts, env, args.batch, args.device)
    results["peak_rss_mib"] = rss["peak"]
    results["rss_at_end_mib"] = {k: v for k, v in rss.items() if k != "peak"}
    results["import_torch_rss_mib"] = import_torch_rss_mib()
    print(
        f"peak RSS of a modstream run process: {rss['peak']:.0f} MiB (at the end: "
        f"{rss['anon']:.0f} anonymous, {rss['file']:.0f} file-backed, of which "
        f"{rss['cuda_build_files']:.0f} of the CUDA build's libraries; importing torch alone: "
        f"{results['import_torch_rss_mib']['rss']:.0f}, "
        f"{results['import_torch_rss_mib']['anon']:.0f} anonymous)"
    )
    torch.set_num_threads(all_threads)  # this thread's: the HF models use them all
    results["two_hf_models_padded_128"] = two_hf_models(texts, predictor.device)
    print(f"two HF models padded to 128    {results['two_hf_models_padded_128']:8.1f} posts/s")
    results["targets"] = targets(results, max_wait_ms)
    write(results, args.out)


def processes_phase(
    texts: list[str],
    repeats: int,
    env: dict[str, str],
    args: argparse.Namespace,
    predictor: Any,
    results: dict[str, Any],
) -> dict[str, Any]:
    """The shipped model, the model that scores nothing and the fast network, each as
    ``--processes`` workers of one group, against the one worker process of the same row.
    Each phase's backlog is the one process's times the processes (the group is timed once
    it settles, and commits come once a second: a short phase would be mostly edges)."""
    gpu = predictor.device.type == "cuda"
    cpus = available_cpus()
    count = args.processes or (4 if gpu else max(2, predictor.concurrency))
    threads = max(1, cpus // count)
    out: dict[str, Any] = {"count": count, "threads_each": threads}
    rows: tuple[tuple[Kind, list[str], str], ...] = (
        ("model", texts * count, "worker_backlog"),
        ("nothing", texts * repeats * count, "pipeline_ceiling"),
        ("fast", texts * repeats * count, "fast_network"),
    )
    for kind, posts, alone in rows:
        settings = bench_settings(env, args.batch, device=args.device)
        run = in_processes(posts, settings, count, threads, kind, args.device)
        one = results[alone]["rate"]
        out[kind] = {"rate": run.rate, "posts": len(posts), "vs_one_process": run.rate / one}
        print(
            f"{count} worker processes, {kind:7s}      {run.rate:8.1f} posts/s "
            f"({run.rate / one:.2f}x one process, {len(posts):,} posts)"
        )
    return out


def summary(run: WorkerRun) -> dict[str, Any]:
    return {
        "rate": run.rate,
        "seconds": run.seconds,
        "p50_ms": run.quantile_ms(0.5),
        "p99_ms": run.quantile_ms(0.99),
        "stage_busy_share": run.stage_busy,
        "mean_batch_size": run.mean_batch,
        "mean_padding_share": run.mean_padding,
    }


def stages(run: WorkerRun) -> str:
    busy = ", ".join(f"{s} {v:.0%}" for s, v in run.stage_busy.items())
    return f"(busy: {busy}; mean batch {run.mean_batch:.1f}, padding {run.mean_padding:.0%})"


def targets(r: dict[str, Any], max_wait_ms: float) -> list[dict[str, Any]]:
    e2e = r["worker_backlog"]["rate"]
    replay = r["replay_backlog"]["rate"]
    p99 = r["worker_half_capacity"]["p99_ms"] or float("inf")
    bound = max_wait_ms + 2 * r["batch_seconds"] * 1000
    rows = [
        ("end to end >= 0.9x best model-only", e2e / r["best_model_only"]["rate"], 0.9, "x"),
        ("end to end >= 4x one at a time", e2e / r["one_at_a_time"], 4.0, "x"),
        ("replay >= 0.9x the worker from a backlog", replay / e2e, 0.9, "x"),
        (f"p99 at half capacity <= max wait + 2 batches ({bound:.0f} ms)", p99, bound, "ms"),
        ("peak RSS <= 1024 MiB", r["peak_rss_mib"], 1024.0, "MiB"),
    ]
    return [
        {
            "target": name,
            "measured": value,
            "limit": limit,
            "unit": unit,
            "met": value <= limit if unit in ("ms", "MiB") else value >= limit,
        }
        for name, value, limit, unit in rows
    ]


def best_at_once(r: dict[str, Any]) -> str:
    n = r["best_model_only"].get("at_once", 1)
    return f", {n} at a time on one thread each" if n > 1 else ""


def around(bracket: dict[str, float] | None) -> str:
    """How a bracketed baseline moved between its two timings."""
    if not bracket or "before" not in bracket:
        return ""
    return f" (mean of {bracket['before']:.0f} before the worker and {bracket['after']:.0f} after)"


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    base = r["one_at_a_time"]
    half = r["worker_half_capacity"]
    ceiling = r["pipeline_ceiling"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with "
        f"{m['torch_threads']} threads ({m.get('replicas', 1)} model replica(s) in the worker), "
        f"GPU: {m['gpu'] or 'none'}. Posts: {r['posts']}.",
        "",
        "| path | posts/s | vs one at a time |",
        "| --- | --- | --- |",
        f"| one post at a time{around(r.get('one_at_a_time_bracket'))} | {base:.0f} | 1.0x |",
        f"| two HF models, padded to 128, batches of 32 | {r['two_hf_models_padded_128']:.0f} "
        f"| {r['two_hf_models_padded_128'] / base:.1f}x |",
        f"| best model-only: length-bucketed batches of {r['best_model_only']['batch']}"
        f"{best_at_once(r)}{around(r['best_model_only'])} | {r['best_model_only']['rate']:.0f} "
        f"| {r['best_model_only']['rate'] / base:.1f}x |",
        f"| worker end to end, from a backlog | {r['worker_backlog']['rate']:.0f} "
        f"| {r['worker_backlog']['rate'] / base:.1f}x |",
        f"| replay from a backlog (`modstream replay` of the same posts): "
        f"{r['replay_backlog']['vs_worker_backlog']:.2f}x the worker "
        f"| {r['replay_backlog']['rate']:.0f} | {r['replay_backlog']['rate'] / base:.1f}x |",
        f"| worker at half capacity ({half['offered_rate']:.0f} posts/s offered): "
        f"event-to-verdict p50 {half['p50_ms']:.0f} ms, p99 {half['p99_ms']:.0f} ms "
        f"| {half['rate']:.0f} | |",
        f"| the pipeline's ceiling: the worker from a backlog of {ceiling['posts']:,} posts "
        f"with a model that scores nothing, {ceiling['cpu_us_per_post']:.0f} us of CPU a post "
        f"(with the model: {r['worker_backlog']['cpu_us_per_post']:,.0f} us) "
        f"| {ceiling['rate']:.0f} | |",
        *fast_rows(r),
        *process_rows(r),
        "",
        f"Peak resident memory of a `modstream run` process: {r['peak_rss_mib']:.0f} MiB "
        f"(at the end: {r['rss_at_end_mib']['anon']:.0f} MiB anonymous, "
        f"{r['rss_at_end_mib']['file']:.0f} MiB file-backed pages of libraries and files, "
        f"{r['rss_at_end_mib'].get('cuda_build_files', 0):.0f} MiB of them of libraries only "
        "torch's CUDA build has (nvidia-*, libtorch_cuda, triton)"
        f"{torch_alone(r)}; "
        f"of this benchmark's process: {r['harness_peak_rss_mib']:.0f} MiB).",
        "",
        "| target | measured | limit | met |",
        "| --- | --- | --- | --- |",
    ]
    for t in r["targets"]:
        lines.append(
            f"| {t['target']} | {t['measured']:.2f} {t['unit']} | {t['limit']:.2f} "
            f"| {'yes' if t['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def fast_rows(r: dict[str, Any]) -> list[str]:
    """Rows for a fast network (:func:`worker_phases.fast_network`), where a run has them."""
    fast = r.get("fast_network")
    if not fast:
        return []
    return [
        f"| a fast network (MiniLM's 6 layers at hidden size 32, random weights), model-only: "
        f"batches of {r['batch_max_size']}, {r['machine'].get('replicas', 1)} at a time "
        f"| {fast['model_only']:.0f} | |",
        f"| the worker with it, from a backlog of {fast['posts']:,} posts: "
        f"{fast['vs_model_only']:.2f}x its model-only path, "
        f"{fast['cpu_us_per_post']:.0f} us of CPU a post | {fast['rate']:.0f} | |",
    ]


def torch_alone(r: dict[str, Any]) -> str:
    """The resident memory of a process that only imports torch, where a run has it."""
    alone = r.get("import_torch_rss_mib")
    if not alone:
        return ""
    return (
        f"; a process that only imports torch: {alone['rss']:.0f} MiB, "
        f"{alone['anon']:.0f} of them anonymous"
    )


def process_rows(r: dict[str, Any]) -> list[str]:
    """Rows for the worker as several processes, where a run has them."""
    procs = r.get("processes")
    if not procs:
        return []
    names = {
        "model": "the shipped model",
        "nothing": "the model that scores nothing (the pipeline's ceiling)",
        "fast": "the fast network",
    }
    return [
        f"| {procs['count']} worker processes of one group ({procs['threads_each']} torch "
        f"thread(s) each), {names[kind]}, from a backlog of {procs[kind]['posts']:,} posts: "
        f"{procs[kind]['vs_one_process']:.2f}x one process | {procs[kind]['rate']:.0f} | |"
        for kind in names
        if kind in procs
    ]


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = markdown(results)
    (out / f"throughput-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"throughput-{stamp}.md").write_text(text)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(text)
    print(f"written to {out}/throughput-{stamp}.{{json,md}}")


if __name__ == "__main__":
    main()
