"""The generated sample image pushed to a real registry: valid OCI manifests and indexes, pushed in order, streamed."""

from __future__ import annotations

import hashlib
import json
import tracemalloc

import pytest

from tests.support.registry_proxy import RegistryProxy
from webhook.registry.client import OCI_INDEX, OCI_MANIFEST, RegistryClient
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import CHUNK_BYTES, CONFIG_MEDIA_TYPE, push_sample_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry():
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def client(registry):
    return RegistryClient(registry.url, insecure=True, connect_timeout=1, read_timeout=10, max_connections=4)


def blob_sha256(client: RegistryClient, repository: str, digest: str) -> tuple[str, int]:
    hasher, size = hashlib.sha256(), 0
    with client.open_blob(repository, digest) as stream:
        for chunk in stream:
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def test_a_single_platform_image_is_a_valid_oci_manifest_of_its_layers(client):
    pushed = push_sample_image(client, "samples/one", "v1", [5000, CHUNK_BYTES + 7], seed=11)
    manifest = client.get_manifest("samples/one", "v1")
    assert (manifest.media_type, manifest.digest, pushed.media_type) == (OCI_MANIFEST, pushed.digest, OCI_MANIFEST)
    document = json.loads(manifest.data)
    assert document["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert [layer["size"] for layer in document["layers"]] == [5000, CHUNK_BYTES + 7]
    descriptors = document["layers"] + [document["config"]]
    assert [d["digest"] for d in descriptors] == list(pushed.blobs)
    for descriptor in descriptors:
        assert blob_sha256(client, "samples/one", descriptor["digest"]) == (descriptor["digest"], descriptor["size"])
    with client.open_blob("samples/one", document["config"]["digest"]) as stream:
        config = json.loads(b"".join(stream))
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in document["layers"]]
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert pushed.total_bytes == sum(d["size"] for d in descriptors) + len(manifest.data)


def test_a_two_platform_image_is_an_index_of_two_manifests_with_their_own_layers(client):
    pushed = push_sample_image(client, "samples/two", "v1", [3000, 4000], seed=12, platforms=2)
    index = client.get_manifest("samples/two", "v1")
    assert (index.media_type, index.digest) == (OCI_INDEX, pushed.digest)
    entries = json.loads(index.data)["manifests"]
    assert [entry["platform"] for entry in entries] == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64"},
    ]
    layers = []
    for entry in entries:
        child = client.get_manifest("samples/two", entry["digest"])
        assert (child.media_type, len(child.data)) == (OCI_MANIFEST, entry["size"])
        layers.append({layer["digest"] for layer in json.loads(child.data)["layers"]})
    assert len(layers[0]) == 2 and not layers[0] & layers[1]
    assert len(pushed.blobs) == 6 and pushed.manifests == tuple(entry["digest"] for entry in entries)


def test_the_same_seed_gives_the_same_digest_and_a_repush_uploads_nothing(client, registry):
    first = push_sample_image(client, "samples/a", "v1", [1000, 2000], seed=13, platforms=2)
    proxy = RegistryProxy(registry.host).start()
    try:
        again = push_sample_image(
            RegistryClient(proxy.url, insecure=True, connect_timeout=1, read_timeout=10, max_connections=2),
            "samples/a",
            "v2",
            [1000, 2000],
            seed=13,
            platforms=2,
        )
        assert not [path for method, path, _ in proxy.requests if method == "POST"]
    finally:
        proxy.stop()
    assert again.digest == first.digest and again.blobs == first.blobs
    assert push_sample_image(client, "samples/b", "v1", [1000, 2000], seed=13, platforms=2).digest == first.digest
    assert push_sample_image(client, "samples/b", "v2", [1000, 2000], seed=14, platforms=2).digest != first.digest


def test_a_large_layer_is_pushed_without_holding_it_in_memory(client):
    size = 48 * CHUNK_BYTES
    tracemalloc.start()
    try:
        pushed = push_sample_image(client, "samples/large", "v1", [size], seed=15)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * CHUNK_BYTES
    assert client.blob_size("samples/large", pushed.blobs[0]) == size
