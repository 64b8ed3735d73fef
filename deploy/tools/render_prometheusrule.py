#!/usr/bin/env python3
"""Write deploy/k8s/prometheusrule.yaml from deploy/prometheus/rules.yml.

    python deploy/tools/render_prometheusrule.py          # rewrite the manifest
    python deploy/tools/render_prometheusrule.py --check  # exit 1 if it is out of date

rules.yml is the one source (promtool tests it, compose mounts it); the Prometheus operator
wants the same groups inside a PrometheusRule. The groups are copied as text, indented under
``spec:``, so comments and block scalars survive. Needs nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
MANIFEST = ROOT / "deploy" / "k8s" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by deploy/tools/render_prometheusrule.py: edit
# rules.yml and re-run the script (a test fails when this file is out of date).
# The Prometheus operator loads it when its ruleSelector matches these labels (for
# kube-prometheus-stack: `release: <your release name>`; adjust below).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: modstream
  labels:
    app.kubernetes.io/name: modstream
    app.kubernetes.io/component: worker
    release: kube-prometheus-stack
spec:
"""


def render(rules_text: str) -> str:
    """The manifest: the header, then rules.yml from ``groups:`` on, indented by two."""
    lines = rules_text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("groups:")), None)
    if start is None:
        raise SystemExit(f"{RULES}: no top-level 'groups:'")
    body = [f"  {line}" if line.strip() else "" for line in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    wanted = render(RULES.read_text())
    if args.check:
        if not MANIFEST.is_file() or MANIFEST.read_text() != wanted:
            print(f"{MANIFEST} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    MANIFEST.write_text(wanted)
    print(f"wrote {MANIFEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
