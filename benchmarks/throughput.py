"""End-to-end throughput of the worker on the local stack, against a baseline in the same run.

Prints, for the model alone and for the whole worker (Kafka -> model -> Redis + Kafka ->
commit), events per second with micro-batching and with batches of one (the baseline), and
the ratio; plus the process's peak resident memory. Needs Kafka and Redis endpoints
(``make bench`` starts the local stack).

    python benchmarks/throughput.py [--events 2000] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
import uuid
from contextlib import ExitStack

from kafka.admin import KafkaAdminClient, NewTopic

from models import DEFAULT_ARTIFACT_DIR
from models.runtime import load_predictor
from worker.app import build_worker
from worker.config import load_settings
from worker.kafka_client import committed_total
from worker.produce import produce, synthetic_events


def model_only(predictor, texts: list[str], batch: int) -> float:  # type: ignore[no-untyped-def]
    predictor.predict(texts[:batch])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        predictor.predict(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - started)


def end_to_end(predictor, n: int, batch: int) -> float:  # type: ignore[no-untyped-def]
    run = f"bench-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        kafka_bootstrap_servers=os.environ["MODSTREAM_KAFKA_BOOTSTRAP_SERVERS"],
        redis_url=os.environ["MODSTREAM_REDIS_URL"],
        input_topic=f"{run}.posts",
        output_topic=f"{run}.verdicts",
        dlq_topic=f"{run}.dlq",
        group_id=run,
        metrics_port=0,
        batch_max_size=batch,
        batch_max_wait_ms=20,
        redis_key_prefix=f"modstream:bench:{run}:",
        redis_ttl_seconds=600,
    )
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    admin.create_topics(
        [
            NewTopic(t, 4, 1)
            for t in (settings.input_topic, settings.output_topic, settings.dlq_topic)
        ]
    )
    admin.close()
    produce(settings, synthetic_events(), count=n)  # backlog first: measures the worker alone
    with ExitStack() as stack:
        worker = build_worker(settings, predictor, stack)
        thread = threading.Thread(target=worker.run)
        started = time.perf_counter()
        thread.start()
        while committed_total(settings) < n:
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        worker.request_stop()
        thread.join()
    return n / elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    predictor = load_predictor(DEFAULT_ARTIFACT_DIR)
    print(
        f"model {predictor.version} on {predictor.device} (autocast {predictor.amp_dtype}), "
        f"torch threads {__import__('torch').get_num_threads()}"
    )
    texts = [str(e["text"]) for _, e in zip(range(512), synthetic_events(3), strict=False)]
    base = model_only(predictor, texts[:128], 1)
    fast = model_only(predictor, texts, args.batch)
    print(
        f"model only:  batch 1 {base:8.1f} posts/s | batch {args.batch} {fast:8.1f} posts/s "
        f"| ratio {fast / base:.2f}x"
    )
    base_e2e = end_to_end(predictor, max(200, args.events // 5), 1)
    e2e = end_to_end(predictor, args.events, args.batch)
    print(
        f"end to end:  batch 1 {base_e2e:8.1f} events/s | batch {args.batch} {e2e:8.1f} events/s "
        f"| ratio {e2e / base_e2e:.2f}x"
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process (model + worker): {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
