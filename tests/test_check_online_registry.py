"""`ccr-webhook check` online against real registries: the verdicts follow the digest the registry serves."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import urllib3

from webhook.cli import main
from webhook.registry.client import OCI_MANIFEST, RegistryClient
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration


def test_check_pins_to_the_digest_the_real_registry_serves(tmp_path, capsys):
    with RegistryServer() as upstream, RegistryServer() as ccr:
        client = RegistryClient(upstream.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
        pushed = push_sample_image(client, "team/app", "1.0", layer_sizes=[1024], seed=7)
        head = urllib3.request("HEAD", f"{upstream.url}/v2/team/app/manifests/1.0", headers={"Accept": OCI_MANIFEST})
        served = head.headers["Docker-Content-Digest"]
        config = tmp_path / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True},
                    "upstreams": [
                        {"registry": upstream.host, "endpoint": upstream.url, "insecure": True, "prefix": "mirror"}
                    ],
                    "policy": {"swap": "exists"},  # pinned upstream until the CCR holds it
                }
            )
        )
        manifest = tmp_path / "deploy.yaml"
        manifest.write_text(
            json.dumps(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "app"},
                    "spec": {
                        "template": {
                            "spec": {"containers": [{"name": "app", "image": f"{upstream.host}/team/app:1.0"}]}
                        }
                    },
                }
            )
        )

        code = main(["check", "--config", str(config), "-o", "json", str(manifest)])
        [result] = json.loads(capsys.readouterr().out)["results"]
        assert code == 0 and served == pushed.digest
        assert (result["action"], result["new_image"]) == ("pin", f"{upstream.host}/team/app:1.0@{served}")

        ccr_client = RegistryClient(ccr.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
        push_sample_image(ccr_client, "mirror/team/app", "1.0", layer_sizes=[1024], seed=7)
        code = main(["check", "--config", str(config), "-o", "json", str(manifest)])
        [result] = json.loads(capsys.readouterr().out)["results"]
        assert (result["action"], result["new_image"]) == ("rewrite", f"{ccr.host}/mirror/team/app:1.0@{served}")


@pytest.mark.parametrize("on_resolve_error", ["allow", "deny"])
def test_check_fails_on_a_tag_the_upstream_does_not_have(tmp_path, on_resolve_error):
    """The installed `ccr-webhook check`, as CI runs it: a tag the real registry answers 404 for is a denial."""
    with RegistryServer() as upstream, RegistryServer() as ccr:
        client = RegistryClient(upstream.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
        push_sample_image(client, "team/app", "1.0", layer_sizes=[1024], seed=7)
        config = tmp_path / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True},
                    "upstreams": [{"registry": upstream.host, "endpoint": upstream.url, "insecure": True}],
                    "policy": {"swap": "exists", "onResolveError": on_resolve_error},
                }
            )
        )
        containers = [
            {"name": "app", "image": f"{upstream.host}/team/app:1.0"},
            {"name": "typo", "image": f"{upstream.host}/team/app:1.0-typo"},
            {"name": "gone", "image": f"{upstream.host}/team/nothing:1"},
        ]
        manifest = tmp_path / "pod.yaml"
        manifest.write_text(json.dumps({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}}))
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "ccr-webhook"),
                "check",
                "-o",
                "json",
                "--config",
                str(config),
                str(manifest),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    results = {result["container"]: result for result in json.loads(done.stdout)["results"]}
    assert results["app"]["action"] == "pin"
    for name, image in (("typo", "team/app:1.0-typo"), ("gone", "team/nothing:1")):
        assert results[name]["action"] == "deny", results[name]
        assert f"{image} does not exist upstream" in results[name]["reason"] and "not found" in results[name]["reason"]
