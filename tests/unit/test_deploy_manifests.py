"""deploy/ holds together: the rules the issues set for the manifests, the image, compose, the
alerts and the dashboard, and the generated files are up to date with their sources."""

from __future__ import annotations

import copy
import json
import re
import runpy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
GRACE_MARGIN_S = 20  # terminationGracePeriodSeconds - MODSTREAM_SHUTDOWN_GRACE_SECONDS


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def configmap() -> dict[str, str]:
    data: dict[str, str] = load(K8S / "configmap.yaml")["data"]
    return data


def deployment(gpu: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = load(K8S / f"worker-deployment{'-gpu' if gpu else ''}.yaml")
    return doc


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = doc["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def partitions_of_input_topic() -> int:
    """The `posts` partition count that compose's kafka-init creates."""
    compose = (DEPLOY / "compose" / "docker-compose.yml").read_text()
    match = re.search(r"\bposts:(\d+)\b", compose)
    assert match, "kafka-init no longer creates posts:N"
    return int(match.group(1))


# ---- autoscaling --------------------------------------------------------------------------


def test_autoscaler_owns_replicas_between_two_and_the_partition_count() -> None:
    scaled = load(K8S / "keda-scaledobject.yaml")
    spec = scaled["spec"]
    for gpu in (False, True):
        assert "replicas" not in deployment(gpu)["spec"]  # the autoscaler's HPA owns it
        assert spec["scaleTargetRef"]["name"] == deployment(gpu)["metadata"]["name"]
    assert spec["minReplicaCount"] >= 2
    assert spec["maxReplicaCount"] == partitions_of_input_topic()
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    # A drain may take one pod while at least one stays.
    assert load(K8S / "pdb.yaml")["spec"]["maxUnavailable"] < spec["minReplicaCount"]
    assert not (K8S / "hpa.yaml").exists()  # two autoscalers would fight over replicas


def test_scaler_watches_the_group_and_topic_the_workers_use() -> None:
    meta = load(K8S / "keda-scaledobject.yaml")["spec"]["triggers"][0]["metadata"]
    cfg = configmap()
    assert meta["bootstrapServers"] == cfg["MODSTREAM_KAFKA_BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == cfg["MODSTREAM_GROUP_ID"]
    assert meta["topic"] == cfg["MODSTREAM_INPUT_TOPIC"]
    assert meta["offsetResetPolicy"] == cfg["MODSTREAM_AUTO_OFFSET_RESET"]
    keda_sasl = {
        "PLAIN": "plaintext",
        "SCRAM-SHA-256": "scram_sha256",
        "SCRAM-SHA-512": "scram_sha512",
    }
    assert meta["sasl"] == keda_sasl[cfg["MODSTREAM_KAFKA_SASL_MECHANISM"]]
    assert (meta["tls"] == "enable") == cfg["MODSTREAM_KAFKA_SECURITY_PROTOCOL"].endswith("SSL")
    auth = load(K8S / "keda-triggerauthentication.yaml")
    assert (
        load(K8S / "keda-scaledobject.yaml")["spec"]["triggers"][0]["authenticationRef"]["name"]
        == (auth["metadata"]["name"])
    )
    refs = {r["parameter"]: r["key"] for r in auth["spec"]["secretTargetRef"]}
    refs |= {r["parameter"]: r["key"] for r in auth["spec"]["configMapTargetRef"]}
    assert refs == {
        "username": "MODSTREAM_KAFKA_SASL_USERNAME",
        "password": "MODSTREAM_KAFKA_SASL_PASSWORD",
    }


# ---- the Deployments ----------------------------------------------------------------------


@pytest.mark.parametrize("gpu", [False, True])
def test_termination_grace_is_the_drain_plus_the_stated_margin(gpu: bool) -> None:
    grace = float(configmap()["MODSTREAM_SHUTDOWN_GRACE_SECONDS"])
    pod = deployment(gpu)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == grace + GRACE_MARGIN_S
    compose = load(DEPLOY / "compose" / "docker-compose.yml")["services"]["worker"]
    assert compose["stop_grace_period"] == f"{int(grace) + GRACE_MARGIN_S}s"
    assert float(compose["environment"]["MODSTREAM_SHUTDOWN_GRACE_SECONDS"]) == grace


@pytest.mark.parametrize("gpu", [False, True])
def test_pod_runs_without_api_token_and_declares_ephemeral_storage(gpu: bool) -> None:
    pod = deployment(gpu)["spec"]["template"]["spec"]
    account = load(K8S / "serviceaccount.yaml")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False
    resources = container(deployment(gpu))["resources"]
    assert resources["requests"]["ephemeral-storage"]
    assert resources["limits"]["ephemeral-storage"]


def test_network_policy_selects_the_workers_and_admits_only_the_metrics_port() -> None:
    policy = load(K8S / "networkpolicy.yaml")["spec"]
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ports = [p["port"] for rule in policy["ingress"] for p in rule["ports"]]
    assert ports == ["metrics"]
    assert any(p["name"] == "metrics" for p in container(deployment())["ports"])


def test_gpu_deployment_differs_from_the_cpu_one_only_in_the_device_and_batch() -> None:
    cpu, gpu = deployment(), deployment(gpu=True)
    gpu_container = container(gpu)
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "MODSTREAM_DEVICE", "value": "cuda"} in gpu_container["env"]
    # The ConfigMap's batch size is the CPU's; the GPU's is larger, set on the container.
    gpu_batch = {e["name"]: e["value"] for e in gpu_container["env"] if "value" in e}
    assert int(gpu_batch["MODSTREAM_BATCH_MAX_SIZE"]) > int(configmap()["MODSTREAM_BATCH_MAX_SIZE"])
    assert gpu_container["image"].endswith("-cuda")
    assert configmap()["MODSTREAM_DEVICE"] == "cpu"

    def strip(doc: dict[str, Any]) -> dict[str, Any]:
        doc = copy.deepcopy(doc)
        pod = doc["spec"]["template"]["spec"]
        for key in ("nodeSelector", "tolerations"):
            pod.pop(key, None)
        c = container(doc)
        c["env"] = [
            e for e in c["env"] if e["name"] not in ("MODSTREAM_DEVICE", "MODSTREAM_BATCH_MAX_SIZE")
        ]
        for key in ("image", "resources"):
            c.pop(key)
        return doc

    assert strip(gpu) == strip(cpu)


def test_config_hash_annotation_is_current_and_follows_the_config() -> None:
    tool = runpy.run_path(str(DEPLOY / "tools" / "config_hash.py"))
    text = (K8S / "configmap.yaml").read_text()
    digest = tool["config_hash"](text)
    for gpu in (False, True):
        annotations = deployment(gpu)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["checksum/config"] == digest, "run deploy/tools/config_hash.py"
    changed = text.replace('MODSTREAM_BATCH_MAX_SIZE: "32"', 'MODSTREAM_BATCH_MAX_SIZE: "64"')
    assert changed != text
    assert tool["config_hash"](changed) != digest
    # Comments and key order are not config.
    assert tool["config_hash"]("# note\n" + text) == digest


# ---- alerts -------------------------------------------------------------------------------


def alerts() -> list[dict[str, Any]]:
    groups = load(DEPLOY / "prometheus" / "rules.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def readme_anchors() -> set[str]:
    """GitHub's anchors for the headings of deploy/README.md."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", (DEPLOY / "README.md").read_text(), re.M)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


def test_alerts_assume_no_job_name_and_link_a_runbook_section() -> None:
    text = (DEPLOY / "prometheus" / "rules.yml").read_text()
    assert not re.search(r"job\s*=~?\s*\"", text)
    anchors = readme_anchors()
    names = {rule["alert"] for rule in alerts()}
    assert {"ModstreamStalled", "ModstreamCommitsStopped", "ModstreamErrorRatioHigh"} <= names
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        assert "/deploy/README.md#" in url
        assert url.rsplit("#", 1)[1] == rule["alert"].lower()
        assert rule["alert"].lower() in anchors, f"no runbook section for {rule['alert']}"


def test_error_alert_is_a_ratio() -> None:
    (rule,) = [r for r in alerts() if r["alert"] == "ModstreamErrorRatioHigh"]
    assert "/" in rule["expr"] and "modstream_errors_total" in rule["expr"]


def test_prometheusrule_carries_exactly_the_rules_file() -> None:
    tool = runpy.run_path(str(DEPLOY / "tools" / "render_prometheusrule.py"))
    assert tool["main"](["--check"]) == 0, "run deploy/tools/render_prometheusrule.py"
    manifest = load(K8S / "prometheusrule.yaml")
    assert manifest["spec"] == load(DEPLOY / "prometheus" / "rules.yml")


# ---- dashboard ----------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (DEPLOY / "grafana" / "dashboards" / "modstream.json").read_text()
    )
    return doc


def test_dashboard_is_generated_from_its_script() -> None:
    tool = runpy.run_path(str(DEPLOY / "grafana" / "dashboard.py"))
    assert json.loads(tool["render"]()) == dashboard(), "run deploy/grafana/dashboard.py"


def test_every_dashboard_query_is_filtered_by_job_namespace_instance_and_mode() -> None:
    doc = dashboard()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert {"datasource", "job", "namespace", "mode", "instance"} <= variables.keys()
    # "All" jobs are the jobs with modstream series, not every job (up{} would count them).
    assert "allValue" not in variables["job"]
    assert "modstream_" in variables["job"]["definition"]
    # It opens on the live workers; "All" also matches series without the label.
    assert variables["mode"]["current"]["value"] == ["live"]
    assert variables["mode"]["allValue"] == ".*"
    assert 'mode=~"$mode"' in variables["instance"]["definition"]
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            selectors = re.findall(r"\b(modstream_\w+|up)\{([^}]*)\}", expr)
            assert selectors, expr
            for name, labels in selectors:
                for var in ("job", "namespace", "instance"):
                    assert f'{var}=~"${var}"' in labels, (panel["title"], expr)
                # up has no mode label: it is joined to its target's modstream_model_info.
                if name == "up":
                    assert "and on (namespace, job, instance)" in expr, expr
                    assert "modstream_model_info{" in expr, expr
                else:
                    assert 'mode=~"$mode"' in labels, (panel["title"], expr)
        assert panel["fieldConfig"]["defaults"]["noValue"] == "0", panel["title"]
    assert doc["editable"] is False


def test_dashboard_shows_up_backlog_and_padded_tokens() -> None:
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []))
    for needle in ("up{", "modstream_pending_records{", "modstream_batch_padded_tokens_"):
        assert needle in exprs


# ---- image --------------------------------------------------------------------------------


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def lock(variant: str) -> dict[str, str]:
    """name -> version of a lock file, after checking every entry carries hashes."""
    text = (DEPLOY / "docker" / f"requirements-{variant}.lock").read_text()
    entries = re.split(r"\n(?=[a-z0-9])", text.strip())
    pins = {}
    for entry in entries:
        name, version = entry.split(" ", 1)[0].split("==")
        assert "--hash=sha256:" in entry, name
        pins[name] = version
    return pins


def test_locks_cover_every_runtime_dependency_at_an_allowed_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cpu, cuda = lock("cpu"), lock("cuda")
    for line in project["dependencies"]:
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert name in cuda, f"{name} missing from requirements-cuda.lock: deploy/tools/lock.sh"
        assert req.specifier.contains(cuda[name]), (name, cuda[name])
        if name != "torch":
            assert cpu.get(name) == cuda[name], name
    # The CPU image gets torch's CPU wheel on top, and none of the CUDA wheels.
    assert not [n for n in cpu if n == "torch" or n.startswith(("nvidia-", "cuda-", "triton"))]
    assert any(n.startswith("nvidia-") for n in cuda)
    assert {"setuptools", "wheel"} <= cpu.keys()


def test_image_defaults_to_cpu_torch_from_a_pinned_base() -> None:
    text = dockerfile()
    assert re.search(r"^ARG PYTHON_IMAGE=\S+@sha256:[0-9a-f]{64}$", text, re.M)
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)
    assert "--require-hashes" in text and "requirements-${TORCH_VARIANT}.lock" in text
    assert "compileall" in text and "--invalidation-mode unchecked-hash" in text
    assert "download.pytorch.org/whl/cpu" in text


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        parts = path.split("/")
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(Path(p).match(pat) and p.count("/") == pat.count("/") for p in prefixes):
                result = not negate
        return result

    sources = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile(), re.M)
    copied = [s.rstrip("/") for line in sources for s in line.split()]
    assert "deploy/docker/requirements-cpu.lock" in copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not ignored(source), f".dockerignore drops {source}"
    assert ignored("deploy/k8s/configmap.yaml") and ignored(".venv") and ignored(".git")


# ---- compose ------------------------------------------------------------------------------


def test_compose_publishes_on_loopback_with_passwords_and_no_anonymous_grafana() -> None:
    services = load(DEPLOY / "compose" / "docker-compose.yml")["services"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published
    assert all(str(p).startswith("127.0.0.1:") for p in published), published
    redis = services["redis"]
    assert "--requirepass" in redis["command"]
    assert ":@redis:" not in services["worker"]["environment"]["MODSTREAM_REDIS_URL"]
    assert "${REDIS_PASSWORD:?" in services["worker"]["environment"]["MODSTREAM_REDIS_URL"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_readme_applies_every_manifest_and_names_only_existing_files() -> None:
    readme = (DEPLOY / "README.md").read_text()
    named = set(re.findall(r"deploy/k8s/([\w.-]+\.yaml)", readme))
    existing = {p.name for p in K8S.glob("*.yaml")}
    assert named <= existing, named - existing
    # Applied with kubectl: all but the Secret's example and the GPU variant (used instead of
    # worker-deployment.yaml).
    assert existing - named == {"secret.example.yaml", "worker-deployment-gpu.yaml"}
