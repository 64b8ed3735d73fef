"""Every Prometheus metric of the worker, in one place.

One prefix (``modstream_``), base units, bounded label sets: ``action`` (3 values),
``reason`` (the dead-letter reasons), ``stage`` (below), ``sink`` (2), and topic/partition
for lag (bounded by the partitions assigned). The dashboards in ``deploy/`` use exactly
these names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

# Where an error happened: the label values of ERRORS.
ERROR_STAGES = ("consume", "model", "redis", "kafka_produce", "dead_letter", "commit")

EVENTS_CONSUMED = Counter(
    "modstream_events_consumed_total", "Records read from the input topic.", ["topic"]
)
VERDICTS = Counter(
    "modstream_verdicts_total", "Verdicts written to every sink, by action.", ["action"]
)
DEAD_LETTERS = Counter(
    "modstream_dead_letters_total", "Records sent to the dead-letter topic, by reason.", ["reason"]
)
ERRORS = Counter("modstream_errors_total", "Errors by pipeline stage (retried).", ["stage"])
COMMITS = Counter("modstream_offset_commits_total", "Successful offset commits.")

BATCH_SIZE = Histogram(
    "modstream_batch_size",
    "Posts per micro-batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_TOKENS = Histogram(
    "modstream_batch_padded_tokens",
    "Padded tokens per micro-batch (size x longest).",
    buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
)
INFERENCE_SECONDS = Histogram(
    "modstream_inference_seconds",
    "Model forward time per micro-batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SINK_WRITE_SECONDS = Histogram(
    "modstream_sink_write_seconds",
    "Time for a sink to acknowledge one batch.",
    ["sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
END_TO_END_SECONDS = Histogram(
    "modstream_end_to_end_latency_seconds",
    "Event time to verdict acknowledged by all sinks.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
PROCESSING_SECONDS = Histogram(
    "modstream_processing_latency_seconds",
    "Record polled to verdict acknowledged by all sinks (excludes time spent in Kafka).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_LAG = Gauge(
    "modstream_consumer_lag_records",
    "Records behind the partition's high watermark.",
    ["topic", "partition"],
)
PENDING_RECORDS = Gauge("modstream_pending_records", "Records polled but not yet committed.")
PAUSED = Gauge("modstream_consumption_paused", "1 while consumption is paused by backpressure.")
ASSIGNED_PARTITIONS = Gauge("modstream_assigned_partitions", "Input partitions assigned.")
MODEL_INFO = Info("modstream_model", "The model being served.")


def init_labels() -> None:
    """Create every labelled child at 0, so dashboards see the series before the first event."""
    from worker.schema import Action, DeadLetterReason

    for action in Action:
        VERDICTS.labels(action.value)
    for reason in DeadLetterReason:
        DEAD_LETTERS.labels(reason.value)
    for stage in ERROR_STAGES:
        ERRORS.labels(stage)
    for sink in ("redis", "kafka"):
        SINK_WRITE_SECONDS.labels(sink)
