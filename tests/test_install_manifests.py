"""The installation, checked offline: every overlay renders with kubectl's kustomize, every object
validates strictly against the Kubernetes schemas, and the invariants the docs promise hold in code."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.kustomize import (
    CONFIGURATION,
    CREDENTIALS_KEY,
    CREDENTIALS_SECRET,
    KUBERNETES_VERSIONS,
    MANIFESTS,
    NAMESPACE,
    NODES_NAMESPACE,
    OVERLAYS,
    ROOT,
    SERVICE,
    WORKLOADS,
    container,
    find,
    front_config,
    kubectl,
    one,
    pod_spec,
    production_secrets,
    render,
    selects,
    webhook_config,
)
from webhook import tls
from webhook.cli import build_parser
from webhook.policy.workloads import POD_SPEC_PATHS, object_images
from webhook.retention.watch import WATCHED_KINDS

SYSTEM_NAMESPACES = {"kube-system", "kube-public", "kube-node-lease", NAMESPACE}
PEERS, PEER_PORT = "ccr-peers", 5003  # the CCR replicas' headless Service, Role and NetworkPolicy; their port
CCR_POD_LABELS = {"app.kubernetes.io/name": "ccr", "app.kubernetes.io/component": "registry"}

# Kinds of CRDs (no schema ships with kubernetes-validate): checked by the tests below instead.
CUSTOM_KINDS = {
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


# -- rendering and schemas ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_object_validates_strictly(overlay):
    objects = render(overlay)
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(
                    f"{overlay}: {obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: "
                    f"{err.message} at {list(err.path)}"
                )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespaced_object_lives_in_ccr_system_and_names_are_unique(overlay):
    """...but the node agent's, in ccr-nodes (the privileged Pod Security level its hostPath needs stays there)."""
    objects = render(overlay)
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "PriorityClass"}
    seen = set()
    for obj in objects:
        meta = obj["metadata"]
        assert (meta.get("namespace") is None) == (obj["kind"] in cluster_scoped), f"{obj['kind']}/{meta['name']}"
        assert meta.get("namespace") in (None, NAMESPACE, NODES_NAMESPACE)
        if meta.get("namespace") == NODES_NAMESPACE:
            assert meta["labels"].get("app.kubernetes.io/name") == "ccr-node-agent" or obj["kind"] == "ConfigMap"
        key = (obj["kind"], meta["name"])
        assert key not in seen, f"{key} twice"
        seen.add(key)


def test_custom_resources_are_exactly_the_expected_ones():
    # Every other kind was validated against a schema above (a kind without one raises there).
    kinds = {(o["apiVersion"], o["kind"]) for overlay in OVERLAYS for o in render(overlay)}
    assert kinds & CUSTOM_KINDS == CUSTOM_KINDS


# -- the webhook configuration -----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_two_webhooks_by_namespace_label_excluding_system_namespaces(overlay):
    objects = render(overlay)
    webhooks = {w["name"]: w for w in one(objects, "MutatingWebhookConfiguration", CONFIGURATION)["webhooks"]}
    assert set(webhooks) == {"enforce.ccr-webhook.io", "dry-run.ccr-webhook.io"}
    deadline = webhook_config(objects).webhook.deadline_seconds
    for name, path, mode, failure in (
        ("enforce.ccr-webhook.io", "/mutate", "enforce", "Fail"),
        ("dry-run.ccr-webhook.io", "/dry-run", "dry-run", "Ignore"),
    ):
        webhook = webhooks[name]
        assert webhook["clientConfig"]["service"] == {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "path": path,
            "port": 443,
        }
        assert webhook["failurePolicy"] == failure
        assert webhook["sideEffects"] == "NoneOnDryRun"
        assert webhook["reinvocationPolicy"] == "IfNeeded"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert deadline < webhook["timeoutSeconds"] <= 30
        assert webhook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "operations": ["CREATE", "UPDATE"],  # an UPDATE can change a running Pod's image
                "scope": "Namespaced",
            },
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods/ephemeralcontainers"],
                "operations": ["UPDATE"],
                "scope": "Namespaced",
            },
        ]
        selector = webhook["namespaceSelector"]
        other_mode = "dry-run" if mode == "enforce" else "enforce"
        assert selects(selector, {"ccr-webhook/policy": mode, "kubernetes.io/metadata.name": "team-a"})
        assert not selects(selector, {"ccr-webhook/policy": other_mode, "kubernetes.io/metadata.name": "team-a"})
        assert not selects(selector, {"kubernetes.io/metadata.name": "team-a"})
        for system in SYSTEM_NAMESPACES:
            assert not selects(selector, {"ccr-webhook/policy": mode, "kubernetes.io/metadata.name": system}), system
        assert "objectSelector" not in webhook  # no per-Pod opt-out: only those who may label namespaces decide


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_reaches_the_webhook_container_on_8443(overlay):
    objects = render(overlay)
    service = one(objects, "Service", SERVICE)
    deployment = one(objects, "Deployment", SERVICE)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects({"matchLabels": service["spec"]["selector"]}, labels)
    (port,) = service["spec"]["ports"]
    assert port["port"] == 443
    named = {p["name"]: p["containerPort"] for p in container(deployment, "webhook")["ports"]}
    assert named[port["targetPort"]] == 8443
    assert webhook_config(objects).webhook.listen.endswith(":8443")


# -- certificates --------------------------------------------------------------------------------------


def test_bootstrap_sidecar_makes_certificates_for_the_service_the_api_server_calls(tmp_path):
    objects = render("base")
    deployment = one(objects, "Deployment", SERVICE)
    certs = container(deployment, "certs")
    assert certs["restartPolicy"] == "Always"  # a native sidecar: up before the server, renewing after
    args = build_parser().parse_args(certs["args"])
    assert (args.service, args.namespace, args.watch) == (SERVICE, NAMESPACE, True)
    assert args.configurations == [CONFIGURATION]
    one(objects, "Service", args.service)
    # the files the sidecar writes are the ones the server loads
    config = webhook_config(objects)
    tls_mount = next(m for m in container(deployment, "webhook")["volumeMounts"] if m["name"] == "tls")
    assert (
        config.webhook.tls_cert == f"{args.write_dir}/tls.crt" and config.webhook.tls_key == f"{args.write_dir}/tls.key"
    )
    assert tls_mount["mountPath"] == args.write_dir
    assert container(deployment, "certs")["startupProbe"]["exec"]["command"] == ["test", "-s", config.webhook.tls_cert]
    # and what it generates verifies for the name the API server uses
    settings = tls.BootstrapSettings(namespace=args.namespace, service=args.service)
    material, _ = tls.plan_tls_material(None, settings.dns_names, [], settings.policy)
    tls.verify_serving_certificate(material.ca_bundle, material.serving.cert_pem, f"{SERVICE}.{NAMESPACE}.svc")


def test_cert_manager_certificate_names_the_service_and_feeds_the_server_and_the_ca_injection():
    objects = render("overlays/cert-manager")
    certificate = one(objects, "Certificate", "ccr-webhook-tls")["spec"]
    assert certificate["dnsNames"] == tls.service_dns_names(SERVICE, NAMESPACE)
    assert "server auth" in certificate["usages"]
    issuer = one(objects, "Issuer", certificate["issuerRef"]["name"])
    ca_certificate = next(
        c for c in find(objects, "Certificate") if c["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"]
    )
    assert ca_certificate["spec"]["isCA"] is True
    configuration = one(objects, "MutatingWebhookConfiguration", CONFIGURATION)
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/ccr-webhook-tls"
    deployment = one(objects, "Deployment", SERVICE)
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "tls")
    assert volume == {"name": "tls", "secret": {"secretName": certificate["secretName"], "defaultMode": 0o440}}
    assert not pod_spec(deployment).get("initContainers")
    # no one in this overlay may write Secrets: cert-manager does
    for role in find(objects, "Role") + find(objects, "ClusterRole"):
        assert all("secrets" not in rule["resources"] for rule in role["rules"]), role["metadata"]["name"]


# -- the webhook Pods ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_webhook_deployment_is_highly_available_and_probed(overlay):
    objects = render(overlay)
    deployment = one(objects, "Deployment", SERVICE)
    spec = pod_spec(deployment)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert [c["name"] for c in spec["containers"]] == ["webhook", "warmer"]
    webhook = container(deployment, "webhook")
    assert webhook["args"] == ["serve", "--config", "/etc/ccr-webhook/config.yaml"]
    assert container(deployment, "warmer")["args"] == ["warmer", "--config", "/etc/ccr-webhook/config.yaml"]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert webhook[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
    assert any(c["topologyKey"] == "kubernetes.io/hostname" for c in spec["topologySpreadConstraints"])
    (budget,) = [p for p in find(objects, "PodDisruptionBudget") if p["metadata"]["name"] == SERVICE]
    assert budget["spec"]["minAvailable"] == 1
    assert selects(budget["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert spec["serviceAccountName"] == SERVICE


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_warmer_is_probed_on_its_metrics_port_and_told_its_namespace_for_the_lease(overlay):
    objects = render(overlay)
    warmer = container(one(objects, "Deployment", SERVICE), "warmer")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert warmer[probe]["httpGet"] == {"path": path, "port": "metrics"}
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in warmer["env"]}
    assert env["POD_NAMESPACE"] == "metadata.namespace" and env["POD_NAME"] == "metadata.name"
    config = webhook_config(objects, "warmer")
    assert config.warmer.metrics_listen.endswith(":9102") and config.warmer.listen.startswith("127.0.0.1:")
    assert config.webhook.warmer_url == f"http://{config.warmer.listen}"
    lease_role = one(objects, "Role", "ccr-webhook-warmer")
    assert lease_role["metadata"]["namespace"] == NAMESPACE  # where POD_NAMESPACE puts the Lease


def test_production_spreads_webhook_replicas_over_nodes_as_a_hard_rule():
    spec = pod_spec(one(render("overlays/production"), "Deployment", SERVICE))
    hostname = [c for c in spec["topologySpreadConstraints"] if c["topologyKey"] == "kubernetes.io/hostname"]
    assert [c["whenUnsatisfiable"] for c in hostname] == ["DoNotSchedule"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_read_only_unprivileged_and_sized(overlay):
    for workload in [o for o in render(overlay) if o["kind"] in WORKLOADS]:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{overlay}: {workload['metadata']['name']}/{c['name']}"
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], where
            assert c["resources"]["limits"]["memory"], where
            assert re.match(r"^[a-z0-9.-]+\.[a-z]+/[a-z0-9/._-]+:[\w.-]+(@sha256:[0-9a-f]{64})?$", c["image"]), (
                f"{where}: image {c['image']} is not fully qualified"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_selector_selects_something(overlay):
    objects = render(overlay)
    templates = [o["spec"]["template"]["metadata"]["labels"] for o in objects if o["kind"] in WORKLOADS]
    selectors = [
        ("Service", o["metadata"]["name"], {"matchLabels": o["spec"]["selector"]}) for o in find(objects, "Service")
    ]
    selectors += [
        ("PodDisruptionBudget", o["metadata"]["name"], o["spec"]["selector"])
        for o in find(objects, "PodDisruptionBudget")
    ]
    selectors += [
        ("NetworkPolicy", o["metadata"]["name"], o["spec"]["podSelector"]) for o in find(objects, "NetworkPolicy")
    ]
    selectors += [("PodMonitor", o["metadata"]["name"], o["spec"]["selector"]) for o in find(objects, "PodMonitor")]
    for kind, name, selector in selectors:
        assert any(selects(selector, labels) for labels in templates), f"{overlay}: {kind}/{name} selects no Pod"
    for hpa in find(objects, "HorizontalPodAutoscaler"):
        one(objects, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_config_map_and_secret_volume_refers_to_something_real_or_documented(overlay):
    objects = render(overlay)
    config_maps = {o["metadata"]["name"] for o in find(objects, "ConfigMap")}
    # Secrets made at run time (the certs sidecar, cert-manager) or by the operator (certs/make-production-secrets.sh)
    secrets = {"ccr-webhook-tls", "ccr-webhook-credentials"} | set(production_secrets())
    for workload in [o for o in objects if o["kind"] in WORKLOADS]:
        for volume in pod_spec(workload)["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets


CREDENTIALS_PATH = (
    f"/etc/ccr-webhook-credentials/{CREDENTIALS_KEY}"  # what docs/configuration.md tells operators to write
)


def secret_file(workload: dict[str, Any], container_name: str, path: str) -> tuple[str, str] | None:
    """The (Secret, key) that file `path` of a container comes from through a Secret volume, or None."""
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    for mount in container(workload, container_name).get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        prefix = mount["mountPath"].rstrip("/") + "/"
        if secret is None or "subPath" in mount or not path.startswith(prefix):
            continue
        name = path[len(prefix) :]
        items = {item["path"]: item["key"] for item in secret.get("items", [])}
        key = items.get(name) if items else name
        return (secret["secretName"], key) if key and "/" not in key else None
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_and_ca_files_are_files_of_the_mounted_secrets(overlay):
    objects = render(overlay)
    deployment = one(objects, "Deployment", SERVICE)
    for name in ("webhook", "warmer"):
        config = webhook_config(objects, name)
        assert config == webhook_config(objects), f"{overlay}: the {name} container sees another configuration"
        assert secret_file(deployment, name, CREDENTIALS_PATH) == (CREDENTIALS_SECRET, CREDENTIALS_KEY)
        for registry in (config.ccr, *config.upstreams):
            if registry.credentials:
                assert secret_file(deployment, name, registry.credentials) == (CREDENTIALS_SECRET, CREDENTIALS_KEY), (
                    f"{overlay}: {name}: credentials of {registry.registry} ({registry.credentials}) "
                    "are not the mounted config.json"
                )
            if registry.ca_file:
                assert secret_file(deployment, name, registry.ca_file), (
                    f"{overlay}: {name}: caFile of {registry.registry} ({registry.ca_file}) is in no mounted Secret"
                )
    if overlay == "overlays/production":
        config = webhook_config(objects)
        assert config.ccr.credentials and config.ccr.ca_file
        assert secret_file(deployment, "webhook", config.ccr.ca_file) == ("ccr-registry-tls", "ca.crt")
        assert not any(c["name"] == "ca-bundle" for c in pod_spec(deployment)["initContainers"])
        for name in ("webhook", "warmer"):  # no process-wide trust store replacing the system CAs for every registry
            assert not {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"} & {
                e["name"] for e in container(deployment, name).get("env", [])
            }


def test_every_credentials_path_in_the_docs_and_manifests_is_a_docker_config_json_in_the_secret():
    pages = [
        *(ROOT / "docs").glob("*.md"),
        *MANIFESTS.rglob("*.yaml"),
        ROOT / "certs/README.md",
        ROOT / "examples/config.yaml",
    ]
    named = {m for page in pages for m in re.findall(r"/etc/ccr-webhook-credentials/([\w.-]+)", page.read_text())}
    assert named and named <= {CREDENTIALS_KEY, ".dockerconfigjson"}, named


# -- RBAC ------------------------------------------------------------------------------------------------


def rules_by_role(objects) -> dict[str, list[dict[str, Any]]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o["rules"] for o in objects if o["kind"] in ("Role", "ClusterRole")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_least_privilege(overlay):
    objects = render(overlay)
    roles = rules_by_role(objects)
    for name, rules in roles.items():
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{name} uses a wildcard in {field}"
            assert not set(rule["verbs"]) & {"delete", "deletecollection", "escalate", "bind", "impersonate"}, name
    assert roles["ClusterRole/ccr-webhook-warmer"] == [
        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    assert roles["ClusterRole/ccr-webhook-retention"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list", "watch"]},
    ]
    assert roles["Role/ccr-webhook-warmer"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    for binding in find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding"):
        if binding["metadata"]["name"].startswith("ccr-node-agent"):  # tests/test_node_manifests.py
            continue
        account = "ccr" if binding["metadata"]["name"] == PEERS else SERVICE  # the CCR Pods read their peers
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
        assert f"{binding['roleRef']['kind']}/{binding['roleRef']['name']}" in roles


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_retention_may_list_and_watch_every_kind_it_follows(overlay):
    granted = {
        (group, resource)
        for rules in rules_by_role(render(overlay)).values()
        for rule in rules
        if {"list", "watch"} <= set(rule["verbs"])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    for watched in WATCHED_KINDS:
        assert (watched.api_version.rpartition("/")[0], watched.kind.lower() + "s") in granted, watched.kind


def test_certificate_bootstrap_may_touch_only_its_own_secret_and_webhook_configuration():
    roles = rules_by_role(render("base"))
    secret_rules = roles["Role/ccr-webhook-certs"]
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["create"],
    } in secret_rules  # create cannot name its object
    named = [r for r in secret_rules if r.get("resourceNames")]
    assert named == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["ccr-webhook-tls"],
            "verbs": ["get", "update", "patch"],
        }
    ]
    assert roles["ClusterRole/ccr-webhook-certs"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [CONFIGURATION],
            "verbs": ["get", "patch"],
        }
    ]
    args = build_parser().parse_args(container(one(render("base"), "Deployment", SERVICE), "certs")["args"])
    assert args.secret == "ccr-webhook-tls"


# -- the CCR -------------------------------------------------------------------------------------------


def registry_config(objects, deployment_name: str) -> dict[str, Any]:
    deployment = one(objects, "Deployment", deployment_name)
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "config")["configMap"]
    key = next((i["key"] for i in volume.get("items", []) if i["path"] == "config.yml"), "config.yml")
    return yaml.safe_load(one(objects, "ConfigMap", volume["name"])["data"][key])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ccr_is_where_the_configuration_says_and_scales_on_cpu_and_memory(overlay):
    objects = render(overlay)
    registry, port = webhook_config(objects).ccr.registry.split(":")
    service_name, service_namespace = registry.split(".")[:2]
    assert (service_name, service_namespace) == ("ccr", NAMESPACE) and registry.endswith(".svc")
    assert int(port) in [p["port"] for p in one(objects, "Service", service_name)["spec"]["ports"]]
    hpa = one(objects, "HorizontalPodAutoscaler", "ccr")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ccr"}
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


def test_base_ccr_keeps_images_on_a_volume_with_deletes_and_replicas_on_its_node():
    objects = render("base")
    config = registry_config(objects, "ccr")
    assert config["storage"]["delete"]["enabled"] is True and "filesystem" in config["storage"]
    claim = one(objects, "PersistentVolumeClaim", "ccr-storage")
    volumes = pod_spec(one(objects, "Deployment", "ccr"))["volumes"]
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in volumes
    assert pod_spec(one(objects, "Deployment", "ccr"))["affinity"]["podAffinity"]  # a ReadWriteOnce volume: one node


def test_production_ccr_shares_one_bucket_between_the_registry_behind_the_front_and_a_push_side():
    objects = render("overlays/production")
    assert not find(objects, "PersistentVolumeClaim")
    local, push = registry_config(objects, "ccr"), registry_config(objects, "ccr-push")
    assert local["storage"]["s3"] == push["storage"]["s3"]
    # only the push side deletes and purges; the registry behind the front is on loopback, so TLS stays in the Pod
    assert push["storage"]["delete"]["enabled"] is True and push["storage"]["maintenance"]["uploadpurging"]["enabled"]
    assert "delete" not in local["storage"] and not local["storage"]["maintenance"]["uploadpurging"]["enabled"]
    assert local["http"]["addr"].startswith("127.0.0.1:") and push["http"]["tls"]["certificate"]
    for config in (local, push):
        assert config["auth"]["htpasswd"]["path"] and config["storage"]["redirect"]["disable"] is True
    for name, account in (("ccr", "ccr-htpasswd"), ("ccr-push", "ccr-push-htpasswd")):
        spec = pod_spec(one(objects, "Deployment", name))
        assert any(v.get("secret", {}).get("secretName") == account for v in spec["volumes"] if v["name"] == "auth")
        assert "podAffinity" not in spec.get("affinity", {})  # not held on the node of a volume
    assert one(objects, "HorizontalPodAutoscaler", "ccr")["spec"]["minReplicas"] >= 2
    config = webhook_config(objects)
    assert (
        config.ccr.endpoint == "https://ccr-push.ccr-system.svc:5000"
        and not config.ccr.insecure
        and config.ccr.credentials
    )
    # only the webhook Pods may reach the push side
    (policy,) = [
        p
        for p in find(objects, "NetworkPolicy")
        if p["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "ccr-push"}}
    ]
    assert policy["spec"]["ingress"][0]["from"] == [
        {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "ccr-webhook", "app.kubernetes.io/component": "webhook"}
            }
        }
    ]


# -- the CCR front -----------------------------------------------------------------------------------


def port_number(workload: dict[str, Any], container_name: str, name: str) -> int:
    return next(p["containerPort"] for p in container(workload, container_name)["ports"] if p["name"] == name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nodes_reach_the_front_of_every_ccr_pod_and_the_front_reaches_the_registry_of_its_pod(overlay):
    objects = render(overlay)
    ccr = one(objects, "Deployment", "ccr")
    assert [c["name"] for c in pod_spec(ccr)["containers"]] == ["front", "registry"]
    front = container(ccr, "front")
    assert front["image"] == container(one(objects, "Deployment", SERVICE), "webhook")["image"]
    args = build_parser().parse_args(front["args"])
    assert (args.command, args.config) == ("front", "/etc/ccr-webhook/config.yaml")
    config, seen_by_webhook = front_config(objects), webhook_config(objects)
    # the Service port nodes pull from (ccr.registry) goes to the front's listen port
    port = int(seen_by_webhook.ccr.registry.rpartition(":")[2])
    (nodes_port,) = [p for p in one(objects, "Service", "ccr")["spec"]["ports"] if p["port"] == port]
    assert port_number(ccr, "front", nodes_port["targetPort"]) == int(config.front.listen.rpartition(":")[2])
    # the front mirrors what admission rewrites, and reaches the registry of its own Pod over loopback
    assert config.upstreams == seen_by_webhook.upstreams and config.ccr.registry == seen_by_webhook.ccr.registry
    assert (
        config.ccr.endpoint == "http://127.0.0.1:" + registry_config(objects, "ccr")["http"]["addr"].rpartition(":")[2]
    )
    assert seen_by_webhook.policy.swap.value == "always" and seen_by_webhook.reads_through_front
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert front[probe]["httpGet"]["port"] == nodes_port["targetPort"]
        assert front[probe]["httpGet"].get("scheme", "HTTP") == ("HTTPS" if config.front.tls_cert else "HTTP")
    assert (
        front["securityContext"]["runAsUser"]
        == pod_spec(one(objects, "Deployment", SERVICE))["securityContext"]["runAsUser"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_front_spools_on_a_capped_volume_larger_than_its_spool_cap(overlay):
    objects = render(overlay)
    ccr = one(objects, "Deployment", "ccr")
    config = front_config(objects).front
    (mount,) = [m for m in container(ccr, "front")["volumeMounts"] if m["mountPath"] == config.spool_dir]
    volume = next(v for v in pod_spec(ccr)["volumes"] if v["name"] == mount["name"])
    limit = volume["emptyDir"]["sizeLimit"]
    assert limit.endswith("Gi") and config.spool_max_bytes < int(limit[:-2]) * 1024**3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nodes_reach_no_registry_port_only_the_front(overlay):
    objects = render(overlay)
    ccr = one(objects, "Deployment", "ccr")
    front_port = port_number(ccr, "front", "registry")
    open_to_all = {
        p["port"]
        for policy in find(objects, "NetworkPolicy")
        if selects(policy["spec"]["podSelector"], ccr["spec"]["template"]["metadata"]["labels"])
        for rule in policy["spec"].get("ingress", [])
        if "from" not in rule
        for p in rule["ports"]
    }
    assert open_to_all == {front_port}
    address = registry_config(objects, "ccr")["http"]["addr"]
    assert int(address.rpartition(":")[2]) != front_port
    if overlay == "overlays/production":  # the registry listens on the Pod's loopback: only its front reaches it
        assert address.startswith("127.0.0.1:")
        assert [p["port"] for p in one(objects, "Service", "ccr")["spec"]["ports"]] == [front_port]
    else:  # the warmer writes there: the webhook Pods only
        assert webhook_config(objects).ccr.endpoint.endswith(":" + address.rpartition(":")[2])


def test_production_front_serves_tls_from_the_ccr_certificate_and_passes_the_node_account_through():
    objects = render("overlays/production")
    ccr = one(objects, "Deployment", "ccr")
    config = front_config(objects).front
    assert secret_file(ccr, "front", config.tls_cert) == ("ccr-registry-tls", "tls.crt")
    assert secret_file(ccr, "front", config.tls_key) == ("ccr-registry-tls", "tls.key")
    assert registry_config(objects, "ccr")["auth"]["htpasswd"]["path"] == "/etc/ccr-registry/auth/htpasswd"
    assert secret_file(ccr, "registry", "/etc/ccr-registry/auth/htpasswd") == ("ccr-htpasswd", "htpasswd")
    assert secret_file(ccr, "front", front_config(objects).ccr.credentials) == (CREDENTIALS_SECRET, CREDENTIALS_KEY)


def test_production_ccr_replicas_find_each_other_through_a_headless_service_of_their_own_pods():
    objects = render("overlays/production")
    service = one(objects, "Service", PEERS)["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is False
    assert service["selector"] == CCR_POD_LABELS
    assert service["ports"] == [{"name": "peer", "port": PEER_PORT, "targetPort": "peer", "protocol": "TCP"}]
    ccr = one(objects, "Deployment", "ccr")
    assert pod_spec(ccr)["serviceAccountName"] == "ccr"
    assert {"name": "peer", "containerPort": PEER_PORT, "protocol": "TCP"} in container(ccr, "front")["ports"]
    assert not any(p["containerPort"] == PEER_PORT for p in container(ccr, "registry").get("ports", []))
    config = front_config(objects).front
    assert (config.peer_service, config.peer_namespace, config.peer_address) == (PEERS, NAMESPACE, "10.244.1.7")
    assert int(config.peer_listen.rsplit(":", 1)[1]) == PEER_PORT
    env = {
        e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container(ccr, "front")["env"]
    }
    assert (env["POD_IP"], env["POD_NAMESPACE"]) == ("status.podIP", "metadata.namespace")
    # the shared secret and the peer TLS files come from the Secret the production script makes
    for path in (config.peer_secret, config.peer_tls_cert, config.peer_tls_key, config.peer_ca_file):
        assert secret_file(ccr, "front", path) == ("ccr-front-peers", path.rsplit("/", 1)[1])
        assert secret_file(ccr, "front", path)[1] in production_secrets()["ccr-front-peers"]


def test_production_ccr_reads_its_peers_with_a_token_of_its_own_in_the_front_container_only():
    objects = render("overlays/production")
    assert rules_by_role(objects)[f"Role/{PEERS}"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list"]}
    ]
    binding = one(objects, "RoleBinding", PEERS)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PEERS}
    assert one(objects, "ServiceAccount", "ccr")["automountServiceAccountToken"] is False
    ccr = one(objects, "Deployment", "ccr")
    assert pod_spec(ccr)["automountServiceAccountToken"] is False
    token_dir = "/var/run/secrets/kubernetes.io/serviceaccount"  # where the kubernetes client looks in a Pod
    mounted = {m["mountPath"]: m["name"] for m in container(ccr, "front")["volumeMounts"]}
    sources = next(v for v in pod_spec(ccr)["volumes"] if v["name"] == mounted[token_dir])["projected"]["sources"]
    assert {"path": "token", "expirationSeconds": 3607} in [s.get("serviceAccountToken") for s in sources]
    paths = {i["path"] for s in sources for i in (s.get("configMap") or s.get("downwardAPI") or {}).get("items", [])}
    assert paths == {"ca.crt", "namespace"}
    assert token_dir not in {m["mountPath"] for m in container(ccr, "registry")["volumeMounts"]}


def test_production_ccr_replicas_run_one_per_node_spread_over_zones_and_leave_one_at_a_time():
    objects = render("overlays/production")
    assert one(objects, "PodDisruptionBudget", "ccr")["spec"]["maxUnavailable"] == 1
    spec = pod_spec(one(objects, "Deployment", "ccr"))
    assert set(spec["affinity"]) == {"podAntiAffinity"}
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname" and selects(term["labelSelector"], CCR_POD_LABELS)
    (spread,) = spec["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == ("topology.kubernetes.io/zone", "ScheduleAnyway")
    assert selects(spread["labelSelector"], CCR_POD_LABELS)


# -- what an SRE checks first: priority, disruption, disk, pinned images ----------------------------------

INSTALL_GUIDE = (ROOT / "docs/install.md").read_text()
METRICS_NAMESPACE_LABEL = {"ccr-webhook/metrics": "scrape"}  # on the namespace Prometheus runs in (install.md)
QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def pod_specs(objects) -> list[tuple[str, dict[str, Any]]]:
    """Every object that runs Pods (any workload kind, as the pod-spec walker knows them), named, with its Pod spec."""
    found = []
    for obj in objects:
        if obj["kind"] in POD_SPEC_PATHS:
            spec = obj
            for key in POD_SPEC_PATHS[obj["kind"]][0]:
                spec = spec[key]
            found.append((f"{obj['kind']}/{obj['metadata']['name']}", spec))
    return found


def quantity(value: str) -> int:
    """Bytes of a Kubernetes quantity written with a binary suffix (what these manifests use)."""
    number, suffix = re.fullmatch(r"(\d+)([KMGT]i)?", str(value)).groups()
    return int(number) * QUANTITY.get(suffix or "", 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_runs_at_a_priority_class_that_the_install_ships_or_the_system_has(overlay):
    objects = render(overlay)
    shipped = {c["metadata"]["name"]: c for c in find(objects, "PriorityClass")}
    assert pod_specs(objects)
    for where, spec in pod_specs(objects):
        name = spec.get("priorityClassName")
        assert name in shipped or name in ("system-cluster-critical", "system-node-critical"), f"{overlay}: {where}"
    for name in (SERVICE, "ccr"):  # Pod creation (failurePolicy Fail) and mirrored pulls wait on these
        critical = shipped[pod_spec(one(objects, "Deployment", name))["priorityClassName"]]
        assert critical["globalDefault"] is False and 0 < critical["value"] <= 1_000_000_000  # the user range


def test_the_priority_override_in_the_install_guide_renders(tmp_path):
    (example,) = re.findall(r"```yaml\n# kustomization.yaml of your overlay\n(.*?)```", INSTALL_GUIDE, re.DOTALL)
    overlay = yaml.safe_load(example)
    overlay["resources"] = [os.path.relpath(MANIFESTS / "base", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    result = subprocess.run([kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    assert find(objects, "PriorityClass") == []
    classes = {name: spec["priorityClassName"] for name, spec in pod_specs(objects)}
    assert classes.pop("DaemonSet/ccr-node-agent") == "system-node-critical"  # a node's own, left alone
    assert set(classes.values()) == {"system-cluster-critical"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_drain_never_takes_the_last_webhook_or_ccr_replica(overlay):
    objects = render(overlay)
    budgets = find(objects, "PodDisruptionBudget")
    for name in (SERVICE, "ccr"):
        deployment = one(objects, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (budget,) = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert budget["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow", name  # a broken Pod never blocks
        floor = budget["spec"].get("minAvailable")
        if floor is None:  # maxUnavailable: only with replicas to spare
            hpa = find(objects, "HorizontalPodAutoscaler", name)
            replicas = hpa[0]["spec"]["minReplicas"] if hpa else deployment["spec"].get("replicas", 1)
            assert replicas - budget["spec"]["maxUnavailable"] >= 1, name
        else:
            assert floor >= 1, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_disk_backed_empty_dir_is_capped_and_reserved_as_ephemeral_storage(overlay):
    for where, spec in pod_specs(render(overlay)):
        containers = spec["containers"] + spec.get("initContainers", [])
        disk = {v["name"]: v["emptyDir"] for v in spec.get("volumes", []) if "emptyDir" in v}
        disk = {name: empty for name, empty in disk.items() if (empty or {}).get("medium") != "Memory"}
        for name, empty in disk.items():
            assert (empty or {}).get("sizeLimit"), f"{overlay}: {where}: emptyDir {name} has no sizeLimit"
            users = [c for c in containers if any(m["name"] == name for m in c.get("volumeMounts", []))]
            for c in users:
                resources = c["resources"]
                assert "ephemeral-storage" in resources.get("requests", {}), f"{overlay}: {where}/{c['name']}"
                request = quantity(resources["requests"]["ephemeral-storage"])
                assert quantity(resources["limits"]["ephemeral-storage"]) >= request, f"{where}/{c['name']}"
        # The Pod's request covers what its volumes may hold, and so does its limit (the kubelet evicts a
        # Pod past the sum of its containers' limits).
        running = spec["containers"] + [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
        capped = sum(quantity(empty["sizeLimit"]) for empty in disk.values())
        requested = sum(quantity(c["resources"].get("requests", {}).get("ephemeral-storage", 0)) for c in running)
        limited = sum(quantity(c["resources"].get("limits", {}).get("ephemeral-storage", 0)) for c in running)
        assert requested >= capped and limited >= capped, f"{overlay}: {where}: {requested}, {limited} for {capped}"


def test_quantities_read_as_the_kubelet_reads_them():
    assert [quantity(q) for q in ("24Gi", "256Mi", "1Ki", 0, "7")] == [24 * 2**30, 256 * 2**20, 1024, 0, 7]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_third_party_image_is_pinned_by_digest(overlay):
    own = container(one(render(overlay), "Deployment", SERVICE), "webhook")["image"]
    images = {image for _, spec in pod_specs(render(overlay)) for image in object_images({"kind": "Pod", "spec": spec})}
    assert own in images and len(images) > 1
    for image in images - {own}:
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{overlay}: {image} is not pinned by digest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_ports_admit_the_prometheus_namespace_by_a_documented_label_not_a_name(overlay):
    peers = [
        peer
        for policy in find(render(overlay), "NetworkPolicy")
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if "namespaceSelector" in peer
    ]
    assert peers
    for peer in peers:
        assert peer["namespaceSelector"] == {"matchLabels": METRICS_NAMESPACE_LABEL}
    ((key, value),) = METRICS_NAMESPACE_LABEL.items()
    assert f"{key}={value}" in INSTALL_GUIDE


# -- network policies ------------------------------------------------------------------------------------


def test_production_peer_port_admits_only_the_ccr_pods():
    objects = render("overlays/production")
    opening = [  # every ingress rule of a policy over the CCR Pods that opens the peer port (or every port)
        rule
        for policy in find(objects, "NetworkPolicy")
        if selects(policy["spec"]["podSelector"], CCR_POD_LABELS)
        for rule in policy["spec"].get("ingress", [])
        if not rule.get("ports") or any(p.get("port") in (PEER_PORT, "peer") for p in rule["ports"])
    ]
    assert opening == [
        {
            "from": [{"podSelector": {"matchLabels": CCR_POD_LABELS}}],
            "ports": [{"port": PEER_PORT, "protocol": "TCP"}],
        }
    ]
    egress = one(objects, "NetworkPolicy", PEERS)["spec"]["egress"]
    assert {
        "to": [{"podSelector": {"matchLabels": CCR_POD_LABELS}}],
        "ports": [{"port": PEER_PORT, "protocol": "TCP"}],
    } in egress


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_is_denied_by_default_and_opened_per_port(overlay):
    objects = render(overlay)
    deny = one(objects, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    webhook = one(objects, "NetworkPolicy", "ccr-webhook")["spec"]
    assert {"ports": [{"port": 8443, "protocol": "TCP"}]} in webhook["ingress"]
    egress_ports = {p["port"] for rule in webhook["egress"] for p in rule.get("ports", [])}
    assert {53, 443, 6443, 5000} <= egress_ports
