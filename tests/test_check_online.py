"""`ccr-webhook check` online: the verdicts admission would give, from registry answers (fake and real)."""

import json

import pytest
import urllib3

from webhook.cli import main
from webhook.commands.check import online_verdicts
from webhook.config import parse_config
from webhook.registry.client import OCI_MANIFEST, RegistryClient
from webhook.registry.errors import NotFound
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

DIGEST = "sha256:" + "d" * 64


class FakeRegistry:
    """A registry that knows some tags and some digests."""

    def __init__(self, tags=None, digests=()):
        self.tags = tags or {}
        self.digests = set(digests)

    def resolve_digest(self, repository, reference):
        if (repository, reference) not in self.tags:
            raise NotFound(f"manifest {repository}:{reference} not found")
        return self.tags[repository, reference]

    def has_manifest(self, repository, digest):
        return (repository, digest) in self.digests


class FakeRegistries:
    def __init__(self, upstream, ccr):
        self.ccr = ccr
        self._upstream = upstream

    def upstream(self, registry):
        return self._upstream


EXISTS = {"swap": "exists"}  # the verdict follows the CCR's answer (under the default, always, it is a rewrite)


@pytest.mark.parametrize(
    ("image", "ccr_digests", "policy", "action", "new_image"),
    [
        ("nginx:1.25", (), {}, "pin", f"docker.io/library/nginx:1.25@{DIGEST}"),
        (
            "nginx:1.25",
            [("docker.io/library/nginx", DIGEST)],
            {},
            "rewrite",
            f"ccr.local/docker.io/library/nginx:1.25@{DIGEST}",
        ),
        ("nginx:9", (), {}, "unpinned", None),
        ("nginx:9", (), {"onResolveError": "deny"}, "deny", None),
        ("nginx", (), {}, "deny", None),
    ],
)
def test_online_verdicts_follow_the_registry_answers(image, ccr_digests, policy, action, new_image):
    config = parse_config(
        {"ccr": {"registry": "ccr.local"}, "upstreams": [{"registry": "docker.io"}], "policy": {**EXISTS, **policy}}
    )
    registries = FakeRegistries(FakeRegistry({("library/nginx", "1.25"): DIGEST}), FakeRegistry(digests=ccr_digests))
    [verdict] = online_verdicts([image], config, registries, timeout=5)
    assert (verdict.action, verdict.new_image, verdict.decided) == (action, new_image, True)


@pytest.mark.integration
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
                    "policy": EXISTS,
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


def test_an_unreadable_credentials_file_is_a_configuration_error(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"ccr": {"registry": "ccr.local", "credentials": str(tmp_path / "missing.json")}}))
    (tmp_path / "pod.yaml").write_text("kind: Pod\nspec: {containers: [{name: c, image: nginx:1}]}\n")
    code = main(["check", "--config", str(config), str(tmp_path / "pod.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(
        "ccr-webhook: configuration error: registry https://ccr.local: cannot read credentials file"
    )
    assert err.count("\n") == 1
