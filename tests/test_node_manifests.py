"""The node agent as installed: a DaemonSet on every node with one writable host directory and least privilege,
configured exactly as the webhook is, with RBAC for one Service and its own Events (rendered offline)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support.kustomize import (
    NAMESPACE,
    NODES_NAMESPACE,
    container,
    find,
    one,
    pod_spec,
    render,
    webhook_config,
)
from webhook.config import apply_env_overrides, parse_config

OVERLAYS = ["base", "overlays/production"]
AGENT = "ccr-node-agent"


def _agent(objects: Any) -> dict[str, Any]:
    return one(objects, "DaemonSet", AGENT)


def agent_config(objects: Any) -> Any:
    """The configuration the agent container sees: its ConfigMap at /etc/ccr-webhook, plus its env overrides."""
    daemonset = _agent(objects)
    agent = container(daemonset, "agent")
    mounted = next(m for m in agent["volumeMounts"] if m["mountPath"] == "/etc/ccr-webhook")
    volume = next(v for v in pod_spec(daemonset)["volumes"] if v["name"] == mounted["name"])
    configmap = one(objects, "ConfigMap", volume["configMap"]["name"])
    assert configmap["metadata"]["namespace"] == NODES_NAMESPACE
    env = {e["name"]: e["value"] for e in agent.get("env", []) if "value" in e}
    return parse_config(apply_env_overrides(yaml.safe_load(configmap["data"]["config.yaml"]), env), {})


def _mount(objects: Any, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volume mount whose mountPath holds `path`, and its volume."""
    daemonset = _agent(objects)
    mounts = sorted(container(daemonset, "agent")["volumeMounts"], key=lambda m: len(m["mountPath"]), reverse=True)
    mount = next(m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"] + "/"))
    return mount, next(v for v in pod_spec(daemonset)["volumes"] if v["name"] == mount["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_agent_runs_on_every_node_with_one_writable_host_directory_and_no_privilege(overlay: str) -> None:
    objects = render(overlay)
    daemonset = _agent(objects)
    assert daemonset["metadata"]["namespace"] == NODES_NAMESPACE
    spec = pod_spec(daemonset)
    assert spec["tolerations"] == [{"operator": "Exists"}]  # every taint
    assert spec["hostNetwork"] is True  # containerd reaches the fallback on the node's loopback
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    agent = container(daemonset, "agent")
    security = agent["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]} and not security.get("privileged")
    host_paths = {v["name"]: v["hostPath"] for v in spec["volumes"] if "hostPath" in v}
    writable = {m["name"] for m in agent["volumeMounts"] if m["name"] in host_paths and not m.get("readOnly")}
    assert writable == {"containerd-certs"}
    assert host_paths["containerd-certs"]["path"] == "/etc/containerd/certs.d"
    assert set(host_paths) == {"containerd-certs", "containerd-etc"}
    namespace = one(objects, "Namespace", NODES_NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    ccr_system = one(objects, "Namespace", NAMESPACE)  # the rest keeps the restricted level
    assert ccr_system["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_agent_writes_where_containerd_reads_for_the_name_admission_rewrites_to(overlay: str) -> None:
    objects = render(overlay)
    config = agent_config(objects)
    webhook = webhook_config(objects)
    assert config.ccr.registry == webhook.ccr.registry  # the name images are rewritten to
    assert config.upstreams == webhook.upstreams  # the fallback maps a CCR path back as the front does
    settings = config.nodes
    mount, volume = _mount(objects, settings.host_dir)
    assert volume["hostPath"]["path"] == settings.config_path  # the agent's view of containerd's config_path
    assert settings.host_dir == mount["mountPath"]
    mount, volume = _mount(objects, settings.containerd_config)
    assert mount.get("readOnly") and volume["hostPath"]["path"] == "/etc/containerd"
    service = one(objects, "Service", settings.service)
    assert service["metadata"]["namespace"] == settings.service_namespace == NAMESPACE
    port = int(config.ccr.registry.rpartition(":")[2])
    assert any(p["port"] == port and p["targetPort"] == "registry" for p in service["spec"]["ports"])  # the front
    agent = container(_agent(objects), "agent")
    probe_port = int(settings.listen.rpartition(":")[2])
    assert agent["readinessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/readyz", "port": probe_port}
    namespace_env = next(e for e in agent["env"] if e["name"] == "CCR_WEBHOOK_NODES_EVENT_NAMESPACE")
    assert namespace_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    daemonset = _agent(objects)  # what a stopping agent asks about before it removes its files
    assert (daemonset["metadata"]["name"], daemonset["metadata"]["namespace"]) == (
        settings.daemon_set,
        NODES_NAMESPACE,
    )


def test_production_nodes_get_tls_the_ccr_ca_from_its_configmap_and_the_pull_account_mounted() -> None:
    objects = render("overlays/production")
    config = agent_config(objects)
    assert not config.ccr.insecure  # https:// in hosts.toml, with the CA beside it
    assert config.nodes.ca_config_map == "ccr-ca"  # watched in the agent's namespace, where the script makes it
    mount, volume = _mount(objects, config.nodes.pull_credentials)
    assert volume["secret"]["secretName"] == "ccr-node-pull" and mount["readOnly"]
    assert "ccr-webhook-credentials" not in {
        v.get("secret", {}).get("secretName") for v in pod_spec(_agent(objects))["volumes"]
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_agent_may_read_one_service_and_its_daemonset_and_post_events_only(overlay: str) -> None:
    objects = render(overlay)
    roles = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o["rules"]
        for o in find(objects, "Role")
        if o["metadata"]["name"].startswith(AGENT)
    }
    assert roles == {
        (NAMESPACE, AGENT): [
            {"apiGroups": [""], "resources": ["services"], "resourceNames": ["ccr"], "verbs": ["get"]}
        ],
        (NODES_NAMESPACE, f"{AGENT}-self"): [
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [AGENT], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"]},
        ],
    }
    bindings = [o for o in find(objects, "RoleBinding") if o["metadata"]["name"].startswith(AGENT)]
    assert len(bindings) == 2
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": AGENT, "namespace": NODES_NAMESPACE}]
    assert not [o for o in find(objects, "ClusterRoleBinding") if AGENT in str(o["subjects"])]
    assert pod_spec(_agent(objects))["serviceAccountName"] == AGENT
