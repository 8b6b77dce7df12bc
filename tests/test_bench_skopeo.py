"""The deployment-time benchmark's node check against what skopeo really pulls from a real registry."""

import json

import pytest

from bench.nodes import image_held, skopeo_pull
from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("parallel", [True, False], ids=["layers-at-once", "one-at-a-time"])
def test_what_skopeo_pulls_is_verified_blob_by_blob(tmp_path, parallel):
    with RegistryServer() as registry:
        client = RegistryClient(registry.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
        pushed = push_sample_image(client, "team/app", "1.0", [3000, 2000], seed=1)
        image = f"{registry.host}/{pushed.reference}"
        manifest = json.loads(client.get_manifest("team/app", pushed.digest).data)
        config_and_layers = sum(descriptor["size"] for descriptor in [manifest["config"], *manifest["layers"]])
        assert skopeo_pull(image, tmp_path / "image", parallel=parallel) is None
        assert skopeo_pull(f"{registry.host}/team/absent:1.0", tmp_path / "absent", parallel=parallel) is not None
    assert image_held(tmp_path / "image") == config_and_layers
    assert (tmp_path / "image" / ("index.json" if parallel else "manifest.json")).exists()
