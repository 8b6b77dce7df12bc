"""The deployment-time benchmark's node check against what skopeo really pulls from a real registry."""

import subprocess

import pytest

from bench.nodes import (
    image_held,
    pullable_reference,
)
from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration


def test_what_skopeo_pulls_is_verified_blob_by_blob(tmp_path):
    with RegistryServer() as registry:
        client = RegistryClient(registry.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
        pushed = push_sample_image(client, "team/app", "1.0", [3000, 2000], seed=1)
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                f"docker://{pullable_reference(f'{registry.host}/{pushed.reference}')}",
                f"dir:{tmp_path / 'image'}",
            ],
            check=True,
        )
    manifest = (tmp_path / "image" / "manifest.json").read_bytes()
    assert image_held(tmp_path / "image") == pushed.total_bytes - len(manifest)  # the config and both layers
