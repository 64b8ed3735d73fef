#!/usr/bin/env python3
"""Write the Grafana dashboard deploy/grafana/dashboards/modstream.json.

    python deploy/grafana/dashboard.py          # rewrite the JSON
    python deploy/grafana/dashboard.py --check  # exit 1 if it is out of date

The JSON is generated so that its rules hold for every panel (tests/unit/test_deploy_*.py
checks them on the JSON): every query is filtered by the ``job``, ``namespace``,
``instance`` and ``mode`` variables (``$SEL`` below; ``up``, which has no ``mode``, through
the ``modstream_model_info`` of its target), a panel with no series shows 0 rather than
"No data", and the dashboard is read-only unless someone saves a copy. Metric names are
those of worker/metrics.py (deploy/check_metric_names.py checks them). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "modstream.json"

# Every query carries this filter. "All" jobs means the jobs that export modstream_model_info;
# within them any namespace (absent in compose, where ".*" matches it) and any instance
# (".+", so that a worker that stopped reporting still shows in `up`). `mode` tells the live
# workers (modstream run, the default) from replays (modstream replay); "All" (".*") also
# matches a worker too old to set the label.
TARGET_SEL = 'job=~"$job", namespace=~"$namespace", instance=~"$instance"'
SEL = TARGET_SEL + ', mode=~"$mode"'
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

Panel = dict[str, Any]


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr.replace("$UPSEL", TARGET_SEL).replace("$SEL", SEL),
        "legendFormat": legend,
        "refId": ref,
        "range": True,
    }


def _panel(kind: str, title: str, queries: list[tuple[str, str]], unit: str, desc: str) -> Panel:
    return {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DATASOURCE,
        "targets": [_target(e, legend, chr(65 + i)) for i, (e, legend) in enumerate(queries)],
        "fieldConfig": {
            "defaults": {"unit": unit, "noValue": "0", "min": 0},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


def stat(title: str, expr: str, unit: str, desc: str, legend: str = "") -> Panel:
    return _panel("stat", title, [(expr, legend)], unit, desc)


def series(title: str, queries: list[tuple[str, str]], unit: str, desc: str) -> Panel:
    return _panel("timeseries", title, queries, unit, desc)


def p95(metric: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile(0.95, sum by ({labels}) "
        f"(rate({metric}_bucket{{$SEL}}[$__rate_interval])))"
    )


def rate(metric: str, by: str = "") -> str:
    head = f"sum by ({by}) " if by else "sum "
    return f"{head}(rate({metric}{{$SEL}}[$__rate_interval]))"


def mean(metric: str) -> str:
    return f"{rate(metric + '_sum')} / {rate(metric + '_count')}"


# `up` is Prometheus's own series, without `mode`: a target counts when it exported
# modstream_model_info of the chosen mode in the last hour (a worker down since then is gone).
UP = "up{$UPSEL} and on (namespace, job, instance) max_over_time(modstream_model_info{$SEL}[1h])"

# Lag per partition as the largest report (two members may report one partition for a
# moment around a rebalance), summed.
LAG = "sum(max by (topic, partition) (modstream_consumer_lag_records{$SEL}))"

ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Overview",
        [
            stat("Verdicts/s", rate("modstream_verdicts_total"), "reqps", "All actions."),
            stat("Consumer lag", LAG, "short", "Records behind the input topic's end."),
            stat(
                "Backlog",
                "sum(modstream_pending_records{$SEL})",
                "short",
                "Records polled and not yet committed, over all workers.",
            ),
            stat(
                "Workers up",
                f"sum({UP})",
                "short",
                "Targets whose /metrics answered the last scrape.",
            ),
            stat(
                "Workers consuming",
                "count(modstream_assigned_partitions{$SEL} > 0)",
                "short",
                "Workers with at least one input partition (more than the partition count "
                "sit idle).",
            ),
            stat(
                "Model healthy",
                "min(modstream_model_healthy{$SEL})",
                "short",
                "1 while every worker's model works; 0 once one failed on several posts in a "
                "row, alone (that worker then exits).",
            ),
            stat(
                "Model",
                "count by (version) (modstream_model_info{$SEL})",
                "short",
                "Workers per model version.",
                legend="{{version}}",
            ),
        ],
    ),
    (
        "Throughput",
        [
            series(
                "Verdicts/s by action",
                [(rate("modstream_verdicts_total", "action"), "{{action}}")],
                "reqps",
                "Verdicts every sink acknowledged.",
            ),
            series(
                "Events consumed/s",
                [(rate("modstream_events_consumed_total", "topic"), "{{topic}}")],
                "reqps",
                "Records read from the input topic.",
            ),
            series(
                "Dead letters/s by reason",
                [(rate("modstream_dead_letters_total", "reason"), "{{reason}}")],
                "reqps",
                "Records sent to the dead-letter topic.",
            ),
            series(
                "Errors per batch by stage",
                [
                    (
                        f"{rate('modstream_errors_total', 'stage')} / ignoring (stage) "
                        f"group_left {rate('modstream_batch_size_count')}",
                        "{{stage}}",
                    )
                ],
                "percentunit",
                "Errors (retried) per micro-batch; ModstreamErrorRatioHigh fires above 5%.",
            ),
            series(
                "Errors/s by stage",
                [(rate("modstream_errors_total", "stage"), "{{stage}}")],
                "reqps",
                "Errors by pipeline stage (retried).",
            ),
            series(
                "Offset commits/s",
                [(rate("modstream_offset_commits_total"), "commits")],
                "reqps",
                "Successful offset commits; ModstreamCommitsStopped fires when none happen "
                "while records are pending.",
            ),
        ],
    ),
    (
        "Batches",
        [
            series(
                "Batch size (mean)",
                [(mean("modstream_batch_size"), "posts")],
                "short",
                "Posts per micro-batch.",
            ),
            series(
                "Padded tokens per batch",
                [
                    (mean("modstream_batch_padded_tokens"), "mean"),
                    (p95("modstream_batch_padded_tokens"), "p95"),
                ],
                "short",
                "Rows x longest window per micro-batch: the work the model does, padding "
                "included (MODSTREAM_BATCH_TOKEN_BUDGET caps it).",
            ),
            series(
                "Padded tokens/s",
                [(rate("modstream_batch_padded_tokens_sum"), "tokens/s")],
                "short",
                "Tokens through the model per second, padding included.",
            ),
            series(
                "Padding share (mean)",
                [(mean("modstream_batch_padding_ratio"), "padding")],
                "percentunit",
                "Share of the padded tokens that are padding: work the model does for nothing. "
                "Length-aware batching keeps it low.",
            ),
        ],
    ),
    (
        "Stages",
        [
            series(
                "Stage busy share by worker",
                [
                    (
                        rate("modstream_stage_seconds_sum", "instance, stage"),
                        "{{instance}} {{stage}}",
                    )
                ],
                "percentunit",
                "Share of time each stage is busy (tokenize, model, sinks, commit): the stage "
                "nearest 100% is the worker's bottleneck. The model's sums over its replicas "
                "(modstream_model_replicas): two replicas both busy read 200%.",
            ),
            series(
                "Stage seconds p95",
                [(p95("modstream_stage_seconds", "stage"), "{{stage}}")],
                "s",
                "Per unit of work: a chunk to tokenize, a micro-batch for the model, a batch "
                "until every sink acknowledged, an offset commit.",
            ),
            series(
                "Stage queues",
                [("sum by (stage) (modstream_stage_queue_items{$SEL})", "{{stage}}")],
                "short",
                "Work waiting in front of each stage; a queue that stays full sits before "
                "the bottleneck.",
            ),
        ],
    ),
    (
        "Lag and flow control",
        [
            series(
                "Consumer lag by partition",
                [
                    (
                        "max by (topic, partition) (modstream_consumer_lag_records{$SEL})",
                        "{{topic}}/{{partition}}",
                    )
                ],
                "short",
                "Records behind each partition's end, as its worker sees it.",
            ),
            series(
                "Backlog by worker",
                [("sum by (instance) (modstream_pending_records{$SEL})", "{{instance}}")],
                "short",
                "Records polled and not yet committed.",
            ),
            series(
                "Consumption paused",
                [("max by (instance) (modstream_consumption_paused{$SEL})", "{{instance}}")],
                "short",
                "1 while backpressure pauses fetching.",
            ),
            series(
                "Sinks up",
                [("min by (sink) (modstream_sink_up{$SEL})", "{{sink}}")],
                "short",
                "0 while any worker's writes to that sink fail (it retries, commits nothing "
                "past them and is unready); 1 once they are acknowledged again.",
            ),
            series(
                "Assigned partitions",
                [("sum by (instance) (modstream_assigned_partitions{$SEL})", "{{instance}}")],
                "short",
                "Input partitions per worker.",
            ),
            series(
                "Up",
                [(UP, "{{instance}}")],
                "short",
                "1 when the worker's /metrics answered the scrape.",
            ),
        ],
    ),
    (
        "Latency",
        [
            series(
                "End-to-end latency",
                [
                    (p95("modstream_end_to_end_latency_seconds").replace("0.95", q), name)
                    for q, name in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
                ],
                "s",
                "Event time to verdict acknowledged by every sink (includes time in Kafka).",
            ),
            series(
                "Processing latency p95",
                [(p95("modstream_processing_latency_seconds"), "p95")],
                "s",
                "Record polled to verdict acknowledged (excludes time in Kafka).",
            ),
            series(
                "Inference seconds p95",
                [(p95("modstream_inference_seconds"), "p95")],
                "s",
                "Model forward time per micro-batch.",
            ),
            series(
                "Sink write p95 by sink",
                [(p95("modstream_sink_write_seconds", "sink"), "{{sink}}")],
                "s",
                "Time for a sink to acknowledge one batch.",
            ),
        ],
    ),
]


def _variable(
    name: str, label: str, query: str, all_value: str | None, default: str | None = None
) -> dict[str, Any]:
    """A multi-value query variable. ``all_value`` None: "All" is the values found, as a
    regex (for ``job``, so that ``up`` counts only the jobs that export modstream metrics).
    ``default``: the value selected when the dashboard opens (None: All)."""
    current = (
        {"selected": True, "text": ["All"], "value": ["$__all"]}
        if default is None
        else {"selected": True, "text": [default], "value": [default]}
    )
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        **({"allValue": all_value} if all_value is not None else {}),
        "current": current,
        "options": [],
        "sort": 1,
        "hide": 0,
    }


def _layout(rows: list[tuple[str, list[Panel]]]) -> list[Panel]:
    """Rows of panels, ids and grid positions assigned in order: stats 4 high, graphs 8."""
    panels: list[Panel] = []
    y = 0
    for title, members in rows:
        panels.append(
            {"type": "row", "title": title, "collapsed": False, "panels": [],
             "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}
        )  # fmt: skip
        y += 1
        is_stat = all(p["type"] == "stat" for p in members)
        width, height = (24 // len(members), 4) if is_stat else (8, 8)
        for i, panel in enumerate(members):
            x = (i * width) % 24
            if i and x == 0:
                y += height
            # The last stat takes what 24 // n leaves over.
            w = 24 - x if is_stat and i == len(members) - 1 else width
            panels.append({**panel, "gridPos": {"h": height, "w": w, "x": x, "y": y}})
        y += height
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return panels


def dashboard() -> dict[str, Any]:
    info = "modstream_model_info"
    return {
        "title": "modstream",
        "uid": "modstream",
        "description": "modstream worker: throughput, lag, backpressure, batches and latency "
        "(worker/metrics.py). Generated by deploy/grafana/dashboard.py.",
        "tags": ["modstream", "kafka"],
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "weekStart": "",
        "id": None,
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                },
                _variable("job", "Job", f"label_values({info}, job)", None),
                _variable(
                    "namespace",
                    "Namespace",
                    f'label_values({info}{{job=~"$job"}}, namespace)',
                    ".*",
                ),
                _variable(
                    "mode",
                    "Mode",
                    f'label_values({info}{{job=~"$job", namespace=~"$namespace"}}, mode)',
                    ".*",
                    default="live",
                ),
                _variable(
                    "instance",
                    "Instance",
                    f'label_values({info}{{job=~"$job", namespace=~"$namespace", '
                    f'mode=~"$mode"}}, instance)',
                    ".+",
                ),
            ]
        },
        "panels": _layout(ROWS),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    wanted = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != wanted:
            print(f"{OUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(wanted)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
