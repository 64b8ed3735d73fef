#!/usr/bin/env python3
"""Stamp the ConfigMap's hash on the worker Deployments, so a config change rolls the pods.

    python deploy/tools/config_hash.py          # rewrite the checksum/config annotations
    python deploy/tools/config_hash.py --check  # exit 1 if one is out of date

Pods read the ConfigMap through envFrom, only when they start: without a change to the pod
template, `kubectl apply` of a new ConfigMap changes nothing running. The annotation
``checksum/config: "sha256:<hex>"`` in the template is the hash of the ConfigMap's ``data``
(keys sorted), so applying both files together starts a rolling update. The Secret is
created out of band and is not covered: roll the pods yourself after rotating it
(``kubectl rollout restart deployment/modstream-worker``). Needs PyYAML.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
CONFIGMAP = K8S / "configmap.yaml"
DEPLOYMENTS = (K8S / "worker-deployment.yaml", K8S / "worker-deployment-gpu.yaml")
ANNOTATION = re.compile(r'^(\s*checksum/config:\s*)"[^"]*"', re.M)


def config_hash(configmap_text: str) -> str:
    """``sha256:<hex>`` of the ConfigMap's data as canonical JSON."""
    data = (yaml.safe_load(configmap_text) or {}).get("data") or {}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def stamp(deployment_text: str, digest: str) -> str:
    """The manifest with its checksum/config annotation set to ``digest``."""
    stamped, count = ANNOTATION.subn(lambda m: f'{m.group(1)}"{digest}"', deployment_text)
    if count != 1:
        raise ValueError(f"expected one checksum/config annotation, found {count}")
    return stamped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    digest = config_hash(CONFIGMAP.read_text())
    stale = []
    for path in DEPLOYMENTS:
        text = path.read_text()
        wanted = stamp(text, digest)
        if wanted == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(wanted)
    if args.check and stale:
        print(f"checksum/config out of date in {', '.join(stale)}: run {Path(__file__).name}")
        return 1
    print(f"{digest} in {', '.join(p.name for p in DEPLOYMENTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
