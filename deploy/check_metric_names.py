#!/usr/bin/env python3
"""Check that deploy/ only names metrics the worker exposes and settings the worker reads.

    python deploy/check_metric_names.py [--root REPO]

Metrics: every ``modstream_*`` name in deploy/prometheus/*.yml, the promtool tests in
deploy/prometheus/tests/*.yml, deploy/grafana/**/*.json and deploy/k8s/*.yaml must be a
series that worker/metrics.py exposes: a Counter ``x_total`` as ``x_total`` (and
``x_created``), a Gauge as its name, a Histogram ``x`` as ``x_bucket``, ``x_sum`` and
``x_count``, an Info ``x`` as ``x_info``. A bare histogram or Info name is
reported, since no such series exists. A name with colons (``level:metric:operation``) is a
recording rule: it must be recorded in deploy/prometheus/*.yml, and its metric part must
be a declared metric (after stripping ``_total``/``_bucket``/``_sum``/``_count``/``_info``).

Settings: every ``MODSTREAM_*`` variable in those files, deploy/compose/, the Dockerfile and
deploy/README.md must be a field of ``worker.config.Settings``.

Both sources are read with ``ast``, so the check needs neither the project's dependencies
nor PyYAML (used for recording rules when importable, else a regex). Exits 1 and lists the
unknown names, else exits 0.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

METRIC_KINDS = ("Counter", "Gauge", "Histogram", "Summary", "Info")
# A PromQL-style name; colons only appear in recording-rule names.
NAME_TOKEN = re.compile(r"(?<![A-Za-z0-9_:])[A-Za-z_:][A-Za-z0-9_:]*")
METRIC_PREFIX = "modstream_"
SETTING_TOKEN = re.compile(r"(?<![A-Za-z0-9_])MODSTREAM_[A-Z0-9_]+(?![A-Za-z0-9_])")
SERIES_SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count", "_info")


def declared_metrics(metrics_py: Path) -> dict[str, str]:
    """Name -> kind of every ``Counter("name", ...)``-style declaration in the module."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(metrics_py.read_text(), str(metrics_py))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        first = node.args[0]
        if (
            kind in METRIC_KINDS
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
        ):
            found[first.value] = kind
    return found


def exposed_series(declared: dict[str, str]) -> set[str]:
    """The series names prometheus_client writes for each declared metric."""
    series: set[str] = set()
    for name, kind in declared.items():
        base = name.removesuffix("_total") if kind == "Counter" else name
        if kind == "Counter":
            series |= {f"{base}_total", f"{base}_created"}
        elif kind == "Gauge":
            series.add(name)
        elif kind == "Histogram":
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        elif kind == "Summary":
            series |= {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
        elif kind == "Info":
            series.add(f"{name}_info")
    return series


def family(name: str) -> str:
    """A series or rule's metric part without its type suffix: ``x_bucket`` -> ``x``."""
    for suffix in SERIES_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def setting_names(config_py: Path) -> set[str]:
    """``MODSTREAM_<FIELD>`` for every annotated field of the ``Settings`` class."""
    for node in ast.walk(ast.parse(config_py.read_text(), str(config_py))):
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            return {
                f"MODSTREAM_{stmt.target.id.upper()}"
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    raise SystemExit(f"{config_py}: no Settings class found")


def recorded_rules(rule_files: Iterable[Path]) -> set[str]:
    """Names of the recording rules in Prometheus rule files."""
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        yaml = None
    names: set[str] = set()
    for path in rule_files:
        text = path.read_text()
        if yaml is None:
            names |= set(re.findall(r"^\s*-?\s*record:\s*['\"]?([A-Za-z0-9_:]+)", text, re.M))
            continue
        doc = yaml.safe_load(text) or {}
        for group in doc.get("groups", []) if isinstance(doc, dict) else []:
            names |= {rule["record"] for rule in group.get("rules", []) if "record" in rule}
    return names


def metric_problems(
    path: Path, exposed: set[str], families: set[str], rules: set[str]
) -> list[str]:
    problems = []
    for token in sorted(set(NAME_TOKEN.findall(path.read_text()))):
        token = token.strip(":")
        if METRIC_PREFIX not in token:
            continue
        if ":" in token:
            parts = [p for p in token.split(":") if METRIC_PREFIX in p]
            if token not in rules:
                problems.append(f"{path}: recording rule {token} is not recorded anywhere")
            elif any(family(p) not in families for p in parts):
                problems.append(f"{path}: recording rule {token} names no declared metric")
        elif token not in exposed:
            problems.append(f"{path}: {token} is not a series exposed by worker/metrics.py")
    return problems


def find_problems(root: Path = ROOT) -> tuple[list[str], int, int]:
    """(problems, metric files checked, setting files checked)."""
    deploy = root / "deploy"
    declared = declared_metrics(root / "worker" / "metrics.py")
    if not declared:
        raise SystemExit("worker/metrics.py declares no metrics: wrong --root?")
    exposed = exposed_series(declared)
    families = {family(name) for name in declared}
    rule_files = sorted((deploy / "prometheus").glob("*.yml"))
    rules = recorded_rules(rule_files)
    metric_files = [
        *rule_files,
        *sorted((deploy / "prometheus" / "tests").glob("*.yml")),
        *sorted((deploy / "grafana").rglob("*.json")),
        *sorted((deploy / "k8s").glob("*.yaml")),
    ]
    problems: list[str] = []
    for path in metric_files:
        problems += metric_problems(path, exposed, families, rules)

    settings = setting_names(root / "worker" / "config.py")
    setting_files = [
        *metric_files,
        *sorted((deploy / "compose").glob("*.y*ml")),
        *[p for p in (root / "Dockerfile", deploy / "README.md") if p.is_file()],
    ]
    for path in setting_files:
        for name in sorted(set(SETTING_TOKEN.findall(path.read_text())) - settings):
            problems.append(f"{path}: {name} is not a setting in worker/config.py")
    return problems, len(metric_files), len(setting_files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    problems, n_metric, n_setting = find_problems(args.root.resolve())
    if problems:
        print("unknown names in deploy/:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"ok: metric names in {n_metric} files, settings in {n_setting} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
