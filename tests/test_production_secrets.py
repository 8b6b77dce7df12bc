"""certs/make-production-secrets.sh makes every Secret and key the production overlay uses, valid for Kubernetes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from tests.support.kustomize import (
    CCR_CLUSTER_IP,
    CREDENTIALS_KEY,
    CREDENTIALS_SECRET,
    ROOT,
    WORKLOADS,
    front_config,
    kubectl,
    pod_spec,
    production_secrets,
    render,
    webhook_config,
)
from webhook import tls
from webhook.registry.auth import load_credentials

pytestmark = pytest.mark.integration


def test_production_secrets_script_makes_every_secret_and_key_the_overlay_uses(tmp_path):
    secrets = production_secrets()
    for workload in [o for o in render("overlays/production") if o["kind"] in WORKLOADS]:
        spec = pod_spec(workload)
        for volume in spec["volumes"]:
            if "secret" in volume and volume["secret"]["secretName"] not in ("ccr-webhook-tls",):
                assert volume["secret"]["secretName"] in secrets
                for item in volume["secret"].get("items", []):
                    assert item["key"] in secrets[volume["secret"]["secretName"]]
        for c in spec.get("initContainers", []) + spec["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], f"{workload['metadata']['name']}/{c['name']}: {ref}"
    tls_secret = secrets["ccr-registry-tls"]
    for host in ("ccr.ccr-system.svc", "ccr-push.ccr-system.svc", CCR_CLUSTER_IP):  # the ClusterIP nodes dial too
        tls.verify_serving_certificate(tls_secret["ca.crt"], tls_secret["tls.crt"], host)
    with pytest.raises(tls.CertificateError):
        tls.verify_serving_certificate(tls_secret["ca.crt"], tls_secret["tls.crt"], "10.96.0.51")
    assert tls.key_matches_certificate(tls_secret["tls.crt"], tls_secret["tls.key"])
    # the replicas' peer port: a certificate of the peers' own CA (any name: peers check the chain), the CA's key
    # kept out, and a shared secret of 32 random bytes
    peers = secrets["ccr-front-peers"]
    assert set(peers) == {"secret", "ca.crt", "tls.crt", "tls.key"}
    tls.verify_serving_certificate(peers["ca.crt"], peers["tls.crt"], "ccr-front-peer.ccr-system.svc")
    assert tls.key_matches_certificate(peers["tls.crt"], peers["tls.key"])
    assert len(bytes.fromhex(peers["secret"].decode())) == 32
    assert peers["ca.crt"] != tls_secret["ca.crt"]
    for name, user, password in (
        ("ccr-htpasswd", b"ccr-pull", b"pull-pw"),
        ("ccr-htpasswd", b"ccr-push", b"push-pw"),
        ("ccr-push-htpasswd", b"ccr-push", b"push-pw"),
    ):
        lines = dict(line.split(b":", 1) for line in secrets[name]["htpasswd"].strip().splitlines())
        assert bcrypt.checkpw(password, lines[user])
    assert set(dict(line.split(b":", 1) for line in secrets["ccr-push-htpasswd"]["htpasswd"].split())) == {b"ccr-push"}
    # the push account, in the docker config.json the client reads, for the endpoint the overlay configures;
    # and the upstream accounts merged in beside it
    assert set(secrets[CREDENTIALS_SECRET]) == {CREDENTIALS_KEY}
    config_json = tmp_path / CREDENTIALS_KEY
    config_json.write_bytes(secrets[CREDENTIALS_SECRET][CREDENTIALS_KEY])
    push = load_credentials(config_json, webhook_config(render("overlays/production")).ccr.endpoint)
    assert (push.username, push.password) == ("ccr-push", "push-pw")
    hub = load_credentials(config_json, "https://registry-1.docker.io")
    assert (hub.username, hub.password) == ("hub-user", "hub-pw")
    # the front commits to the registry of its Pod with the push account; the warmer reads through the front as a node
    objects = render("overlays/production")
    front = load_credentials(config_json, front_config(objects).ccr.endpoint)
    assert (front.username, front.password) == ("ccr-push", "push-pw")
    assert front_config(objects).ccr.credentials == f"/etc/ccr-webhook-credentials/{CREDENTIALS_KEY}"
    config = webhook_config(objects, "warmer")
    assert config.reads_through_front  # by default: nodes pull from the front, the warmer writes elsewhere
    through = load_credentials(config_json, f"https://{config.ccr.registry}")
    assert (through.username, through.password) == ("ccr-pull", "pull-pw")
    # the node agent's Secret: the nodes' pull account and the upstream accounts (its fallback), never the push one
    node_pull = tmp_path / "node-pull.json"
    node_pull.write_bytes(secrets["ccr-node-pull"]["config.json"])
    assert set(json.loads(node_pull.read_bytes())["auths"]) == {config.ccr.registry, "https://index.docker.io/v1/"}
    pull = load_credentials(node_pull, config.ccr.registry)
    assert (pull.username, pull.password) == ("ccr-pull", "pull-pw")
    assert secrets["ccr-ca"]["ca.crt"] == tls_secret["ca.crt"]  # the CA nodes are given is the one that signed


def test_production_secrets_script_refuses_to_issue_a_certificate_without_the_cluster_ip(tmp_path):
    path = os.pathsep.join([str(Path(sys.executable).parent), str(Path(kubectl()).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "KUBECONFIG": str(tmp_path / "no-cluster")}
    env.pop("CCR_CLUSTER_IP", None)
    result = subprocess.run(
        [str(ROOT / "certs/make-production-secrets.sh")], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 2
    assert "CCR_CLUSTER_IP" in result.stderr and "ClusterIP" in result.stderr
    assert result.stdout == ""  # no Secret printed
