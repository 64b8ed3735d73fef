"""``modstream demo``: stream sample posts through the worker and show verdicts live.

With no Kafka/Redis endpoints configured it uses the local stack (deploy/local/stack.sh),
starting it if needed and stopping it afterwards if it started it. Each demo run uses its
own topics and consumer group, so it never disturbs a real deployment's offsets.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from worker import localstack
from worker.app import build_worker, load_model
from worker.config import Settings, load_settings
from worker.produce import file_events, produce

SAMPLE = localstack.ROOT / "deploy" / "demo" / "posts.jsonl"


def _sample_events(count: int, run: str) -> list[dict[str, object]]:
    """The sample posts, cycled. No ``created_at``: the event time is then the record's
    timestamp, set when the rate-limited producer sends it, so latency is measured from
    the moment each post enters Kafka."""
    base = list(file_events(SAMPLE))
    return [{**base[i % len(base)], "post_id": f"{run}-{i}"} for i in range(count)]


def run_demo(env_file: Path | None, count: int = 300, rate: float = 40.0) -> int:
    configured = load_settings(env_file)
    with ExitStack() as stack:
        overrides: dict[str, object] = {}
        if "kafka_bootstrap_servers" not in configured.model_fields_set:
            if not localstack.running():
                print("starting the local Kafka + Redis stack (first time: about a minute)...")
                stack.callback(localstack.down)  # stop only what this demo started
            env = localstack.up()
            overrides = {
                "kafka_bootstrap_servers": env["MODSTREAM_KAFKA_BOOTSTRAP_SERVERS"],
                "redis_url": env["MODSTREAM_REDIS_URL"],
            }
        run = f"demo-{uuid.uuid4().hex[:6]}"
        settings = load_settings(
            env_file,
            **overrides,
            input_topic=f"{run}.posts",
            output_topic=f"{run}.verdicts",
            dlq_topic=f"{run}.dlq",
            group_id=run,
            metrics_port=0,
            batch_max_wait_ms=50,
        )
        _create_topics(settings)
        print(f"loading the model from {settings.model_dir} ...")
        model = load_model(settings)
        worker = build_worker(settings, model, stack)
        thread = threading.Thread(target=worker.run, name="worker", daemon=True)
        thread.start()
        stack.callback(thread.join, 30)
        stack.callback(worker.request_stop)
        print(
            f"model {model.version}; streaming {count} posts at {rate:.0f}/s "
            f"into {settings.input_topic}\n"
        )
        feeder = threading.Thread(
            target=produce,
            args=(settings, _sample_events(count, run)),
            kwargs={"count": count, "rate": rate},
            daemon=True,
        )
        feeder.start()
        _watch(settings, count)
    return 0


def _create_topics(settings: Settings) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        admin.create_topics(
            [
                NewTopic(t, 4, 1)
                for t in (settings.input_topic, settings.output_topic, settings.dlq_topic)
            ]
        )
    finally:
        admin.close()


def _watch(settings: Settings, count: int, timeout: float = 300.0) -> None:
    """Read verdicts from the output topic and print a live summary."""
    consumer = KafkaConsumer(
        settings.output_topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    actions: Counter[str] = Counter()
    latencies: list[float] = []
    shown: Counter[str] = Counter()
    texts = {str(e["post_id"]): str(e["text"]) for e in file_events(SAMPLE)}
    started = time.monotonic()
    next_line = started + 1.0
    try:
        while sum(actions.values()) < count and time.monotonic() - started < timeout:
            for batch in consumer.poll(timeout_ms=200).values():
                for rec in batch:
                    v = json.loads(rec.value)
                    actions[v["action"]] += 1
                    latencies.append(
                        (
                            datetime.fromisoformat(v["processed_at"])
                            - datetime.fromisoformat(v["event_time"])
                        ).total_seconds()
                    )
                    if shown[v["action"]] < 2:
                        shown[v["action"]] += 1
                        sample_id = "demo-" + str(int(v["post_id"].rsplit("-", 1)[1]) % len(texts))
                        print(
                            f"  {v['action'].upper():6} fake={v['misinformation']['score']:.2f} "
                            f"sentiment={v['sentiment']['label']:8} | {texts[sample_id][:70]}"
                        )
            if time.monotonic() >= next_line:
                next_line += 1.0
                _summary(actions, latencies, time.monotonic() - started, live=True)
    finally:
        consumer.close()
    print()
    _summary(actions, latencies, time.monotonic() - started, live=False)


def _summary(actions: Counter[str], latencies: list[float], elapsed: float, live: bool) -> None:
    done = sum(actions.values())
    p50 = statistics.median(latencies) if latencies else 0.0
    p95 = (
        statistics.quantiles(latencies, n=20)[-1]
        if len(latencies) >= 20
        else max(latencies, default=0.0)
    )
    line = (
        f"verdicts {done:5d} | allow {actions['allow']:4d} review {actions['review']:4d} "
        f"block {actions['block']:4d} | {done / max(elapsed, 1e-9):6.1f}/s | "
        f"latency p50 {p50 * 1000:6.0f} ms p95 {p95 * 1000:6.0f} ms"
    )
    print(("[live] " if live else "[done] ") + line, flush=True)
