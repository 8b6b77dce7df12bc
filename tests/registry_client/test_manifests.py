"""The registry client's manifests on a real registry: digests, indexes, bytes unchanged, not found, delete, paging."""

from __future__ import annotations

import hashlib
import json

import pytest
import urllib3

from tests.support.local_registry import client as make_client
from webhook.registry.client import (
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    NotFound,
    RegistryProtocolError,
    digest_of,
)
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration


def test_resolve_digest_is_the_registry_header_and_the_sha256_of_the_served_bytes(client, open_registry, sample):
    served = urllib3.request(
        "GET", f"{open_registry.url}/v2/sample/single/manifests/v1", headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
    )
    assert served.status == 200
    resolved = client.resolve_digest("sample/single", "v1")
    assert resolved == served.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(served.data).hexdigest()
    assert resolved == sample.digest
    assert client.resolve_digest("sample/single", resolved) == resolved


def test_an_index_and_its_child_manifests_are_told_apart(client):
    pushed = push_sample_image(client, "sample/multi", "v1", [2000], seed=2, platforms=2)
    index = client.get_manifest("sample/multi", "v1")
    assert (index.media_type, index.is_index, index.digest) == (OCI_INDEX, True, pushed.digest)
    children = [entry["digest"] for entry in json.loads(index.data)["manifests"]]
    assert children == list(pushed.manifests) and len(set(children)) == 2
    child = client.get_manifest("sample/multi", children[0])
    assert (child.media_type, child.is_index, child.digest) == (OCI_MANIFEST, False, children[0])
    assert client.resolve_digest("sample/multi", "v1") == pushed.digest


def test_manifest_bytes_are_pushed_and_served_unchanged(client, sample):
    original = client.get_manifest("sample/single", "v1")
    pretty = json.dumps(json.loads(original.data), indent=3).encode() + b"\n"
    digest = client.put_manifest("sample/single", "pretty", pretty, OCI_MANIFEST)
    assert digest == digest_of(pretty) != original.digest
    fetched = client.get_manifest("sample/single", digest)
    assert fetched.data == pretty and fetched.digest == digest
    assert client.has_manifest("sample/single", digest) is True


def test_a_manifest_whose_blobs_are_missing_is_refused_with_the_registry_code(client):
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(b"absent"),
                "size": 6,
            },
            "layers": [],
        }
    ).encode()
    with pytest.raises(RegistryProtocolError, match="MANIFEST_BLOB_UNKNOWN") as raised:
        client.put_manifest("sample/broken", "v1", manifest, OCI_MANIFEST)
    assert client.endpoint in str(raised.value) and "sample/broken" in str(raised.value)


def test_missing_manifests_and_blobs_raise_not_found_saying_which(client, sample):
    with pytest.raises(NotFound) as raised:
        client.resolve_digest("sample/single", "no-such-tag")
    assert (raised.value.kind, raised.value.reference) == ("manifest", "no-such-tag")
    assert "sample/single" in str(raised.value) and client.endpoint in str(raised.value)
    with pytest.raises(NotFound, match="manifest"):
        client.get_manifest("no/such-repo", "v1")
    absent = digest_of(b"never pushed")
    assert client.has_manifest("sample/single", absent) is False
    assert client.blob_size("sample/single", absent) is None
    with pytest.raises(NotFound) as raised:
        client.open_blob("sample/single", absent)
    assert raised.value.kind == "blob"


def test_delete_manifest_removes_it(client):
    pushed = push_sample_image(client, "sample/deleted", "v1", [100], seed=3)
    client.delete_manifest("sample/deleted", pushed.digest)
    assert client.has_manifest("sample/deleted", pushed.digest) is False
    with pytest.raises(NotFound):
        client.delete_manifest("sample/deleted", pushed.digest)


def test_tags_and_catalog_follow_link_pagination(client, sample, proxy):
    for tag in ("a", "b", "c", "d"):
        client.put_manifest("sample/single", tag, client.get_manifest("sample/single", "v1").data, OCI_MANIFEST)
    paged = make_client(proxy.url)
    assert sorted(paged.list_tags("sample/single", page_size=2)) == ["a", "b", "c", "d", "pretty", "v1"]
    repositories = paged.catalog(page_size=1)  # distribution 2.8 pages its catalog (its tag lists come whole)
    assert {"sample/single", "sample/multi"} <= set(repositories) and len(set(repositories)) == len(repositories)
    assert sum(1 for method, path, _ in proxy.requests if "/_catalog" in path) == len(repositories)
    with pytest.raises(NotFound):
        paged.list_tags("no/such-repo")


# distribution 2.8 cannot cancel a session once a PUT has written data into it (its purger reclaims it later),
# so for those failures the tests check that the client asked to cancel, and that no blob appeared.
