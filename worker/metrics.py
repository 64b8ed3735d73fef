"""Every Prometheus metric of the worker, in one place.

One prefix (``modstream_``), base units, bounded label sets: ``action`` (3 values),
``reason`` (the dead-letter reasons), ``stage`` (below), ``sink`` (``SINKS``), and topic/partition
for lag (bounded by the partitions assigned). The dashboards in ``deploy/`` use exactly
these names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

# Where an error happened: the label values of ERRORS.
ERROR_STAGES = (
    "consume",
    "tokenize",
    "model",
    "redis",
    "kafka_produce",
    "dead_letter",
    "commit",
    "stage",
)
# The worker's stages: the label values of STAGE_SECONDS.
STAGES = ("tokenize", "model", "sinks", "commit")
# Where results go: the label values of SINK_UP.
SINKS = ("redis", "kafka", "dead_letter")

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
TRANSACTIONS = Counter(
    "modstream_transactions_total",
    "Exactly-once mode: transactions ended, by result (committed with their offsets, or "
    "aborted and redone from the committed offsets).",
    ["result"],
)

BATCH_SIZE = Histogram(
    "modstream_batch_size",
    "Posts per micro-batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_TOKENS = Histogram(
    "modstream_batch_padded_tokens",
    "Padded tokens per micro-batch: rows x longest window, as the model pads them (a "
    "predictor on a bf16 CPU rounds both up).",
    buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
)
BATCH_PADDING_SHARE = Histogram(
    "modstream_batch_padding_ratio",
    "Share of a micro-batch's padded tokens that are padding (0: none wasted).",
    buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
)
STAGE_SECONDS = Histogram(
    "modstream_stage_seconds",
    "Busy time of a stage per unit of work: tokenize (per chunk of polled posts), model "
    "(per micro-batch, with policy), sinks (per batch, until every sink acknowledged), "
    "commit (per offset commit). rate(_sum) is the share of time the stage is busy: the "
    "stage nearest 1 is the bottleneck (the model's, over modstream_model_replicas).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STAGE_QUEUE = Gauge(
    "modstream_stage_queue_items",
    "Work waiting in front of a stage (chunks to tokenize, posts waiting for a batch, "
    "batches for the model, jobs for the writer).",
    ["stage"],
)
MODEL_REPLICAS = Gauge(
    "modstream_model_replicas",
    "Model replicas scoring batches side by side, each on its own thread: the model "
    "stage's busy time (modstream_stage_seconds) sums over them, up to this many seconds "
    "a second.",
)
MODEL_HEALTHY = Gauge(
    "modstream_model_healthy",
    "0 once the model failed on a whole batch and then on several posts in a row: the "
    "worker stops consuming and reports unready instead of dead-lettering every post.",
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
SINK_UP = Gauge(
    "modstream_sink_up",
    "0 while writes to the sink fail (and while start-up waits for it to answer), 1 once it "
    "acknowledges again. Nothing is committed past results a down sink has not acknowledged.",
    ["sink"],
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
    "Records of an assigned partition not yet committed by the group: log-end offset minus "
    "committed offset, asked from the broker (right while paused too).",
    ["topic", "partition"],
)
PENDING_RECORDS = Gauge("modstream_pending_records", "Records polled but not yet committed.")
PAUSED = Gauge("modstream_consumption_paused", "1 while consumption is paused by backpressure.")
ASSIGNED_PARTITIONS = Gauge("modstream_assigned_partitions", "Input partitions assigned.")
MODEL_INFO = Info("modstream_model", "The model being served.")
# Outcomes of a model hot-swap: the label values of MODEL_SWAPS.
SWAP_RESULTS = ("ok", "refused")
MODEL_SWAPS = Counter(
    "modstream_model_swaps_total",
    "Model hot-swaps (SIGHUP or a changed artifact): ok, the new model scores from the next "
    "batch; refused, it did not load or failed its probe and the old model keeps serving.",
    ["result"],
)
MODEL_LAST_SWAP = Gauge(
    "modstream_model_last_swap_timestamp_seconds",
    "Unix time the serving model last changed by a hot-swap (0: not since the start).",
)
MODE = Gauge(
    "modstream_worker_mode",
    "1 for the mode this process runs in: live (modstream run) or replay (modstream replay). "
    "Join on instance to tell replay series from live ones.",
    ["mode"],
)


def init_labels(mode: str = "live") -> None:
    """Create every labelled child at 0, so dashboards see the series before the first event."""
    from worker.schema import Action, DeadLetterReason

    MODE.labels(mode).set(1)
    for result in SWAP_RESULTS:
        MODEL_SWAPS.labels(result)
    for action in Action:
        VERDICTS.labels(action.value)
    for reason in DeadLetterReason:
        DEAD_LETTERS.labels(reason.value)
    for stage in ERROR_STAGES:
        ERRORS.labels(stage)
    for sink in ("redis", "kafka"):
        SINK_WRITE_SECONDS.labels(sink)
    for sink in SINKS:
        SINK_UP.labels(sink).set(1)
    for stage in STAGES:
        STAGE_SECONDS.labels(stage)
    for stage in (*STAGES[:3], "batch"):
        STAGE_QUEUE.labels(stage)
    for result in ("committed", "aborted"):
        TRANSACTIONS.labels(result)
    MODEL_HEALTHY.set(1)
