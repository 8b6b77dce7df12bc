"""The registry client's blobs on a real registry: uploads verified, cancelled when they fail, mounts, cut downloads."""

from __future__ import annotations

import hashlib

import pytest
import urllib3

from tests.support.local_registry import client as make_client
from tests.support.local_registry import open_uploads, upload_bytes
from tests.support.registry_proxy import RegistryProxy
from webhook.registry import client as registry_module
from webhook.registry.client import (
    RegistryProtocolError,
    RegistryUnavailable,
    digest_of,
)

pytestmark = pytest.mark.integration


def test_blob_upload_then_download_round_trip_is_verified(client):
    data = bytes(range(256)) * 12289  # a little over 3 MiB: several chunks each way
    digest = upload_bytes(client, "blobs/round", data)
    assert client.blob_size("blobs/round", digest) == len(data)
    with client.open_blob("blobs/round", digest) as stream:
        assert stream.size == len(data)
        received = hashlib.sha256()
        for chunk in stream:
            received.update(chunk)
    assert "sha256:" + received.hexdigest() == digest


def test_open_uploads_sees_a_live_session(open_registry):
    started = urllib3.request("POST", f"{open_registry.url}/v2/blobs/live/blobs/uploads/")
    assert started.status == 202 and len(open_uploads(open_registry, "blobs/live")) == 1
    urllib3.request("DELETE", started.headers["Location"])
    assert open_uploads(open_registry, "blobs/live") == []


def test_mount_links_an_existing_blob_and_cancels_the_upload_it_cannot_mount(client, open_registry):
    digest = upload_bytes(client, "blobs/source", b"mount me" * 1000)
    assert client.mount_blob("blobs/target", digest, "blobs/source") is True
    assert client.blob_size("blobs/target", digest) == 8000
    assert client.mount_blob("blobs/target", digest_of(b"nowhere"), "blobs/source") is False
    assert open_uploads(open_registry, "blobs/target") == []


def upload_requests(proxy: RegistryProxy) -> list[str]:
    return [method for method, path, _ in proxy.requests if "/blobs/uploads/" in path]


def cancelled_upload(proxy: RegistryProxy) -> list[str]:
    """The upload requests, with the PUT and the DELETE in a fixed order: when the client breaks off a PUT
    it sends the DELETE at once, and the proxy may record that before it has read the broken PUT."""
    methods = upload_requests(proxy)
    return methods[:1] + sorted(methods[1:], reverse=True)


def test_an_upload_whose_source_breaks_is_cancelled_and_leaves_no_blob(proxy):
    client = make_client(proxy.url)
    data = b"x" * 300_000
    digest = digest_of(data)

    def breaking():
        yield data[:100_000]
        raise OSError("upstream went away")

    with pytest.raises(OSError, match="upstream went away"):
        client.upload_blob("blobs/aborted", digest, len(data), breaking())
    assert cancelled_upload(proxy) == ["POST", "PUT", "DELETE"]
    assert client.blob_size("blobs/aborted", digest) is None


@pytest.mark.parametrize(
    ("declared", "size", "error", "message"),
    [
        (digest_of(b"something else"), 5, RegistryProtocolError, "DIGEST_INVALID"),
        (digest_of(b"hello"), 9, ValueError, "ended after 5 of the declared 9 bytes"),
        (digest_of(b"hello"), 3, ValueError, "longer than the declared 3 bytes"),
    ],
)
def test_an_upload_with_the_wrong_digest_or_length_is_refused_and_cancelled(proxy, declared, size, error, message):
    client = make_client(proxy.url)
    with pytest.raises(error, match=message):
        client.upload_blob("blobs/wrong", declared, size, [b"hello"])
    assert cancelled_upload(proxy) == ["POST", "PUT", "DELETE"]
    assert client.blob_size("blobs/wrong", declared) is None


def test_a_refused_monolithic_put_falls_back_to_chunked_patches(proxy, monkeypatch, open_registry):
    monkeypatch.setattr(registry_module, "PATCH_BYTES", 40_000)
    proxy.refuse_monolithic_put = True
    proxy.relative_locations = True
    client = make_client(proxy.url)
    data = hashlib.sha256(b"seed").digest() * 3000  # 96,000 bytes: three PATCHes
    digest = upload_bytes(client, "blobs/chunked", data)
    assert upload_requests(proxy) == ["POST", "PUT", "DELETE", "POST", "PATCH", "PATCH", "PATCH", "PUT"]
    with client.open_blob("blobs/chunked", digest) as stream:
        assert b"".join(stream) == data
    proxy.requests.clear()
    upload_bytes(client, "blobs/chunked", b"second upload")  # remembered: straight to PATCH
    assert upload_requests(proxy) == ["POST", "PATCH", "PUT"]
    assert open_uploads(open_registry, "blobs/chunked") == []


def test_a_refused_monolithic_put_of_a_one_shot_stream_raises_and_cancels(proxy, open_registry):
    proxy.refuse_monolithic_put = True
    client = make_client(proxy.url)
    with pytest.raises(RegistryProtocolError, match="HTTP 416"):
        client.upload_blob("blobs/oneshot", digest_of(b"once"), 4, iter([b"once"]))
    assert open_uploads(open_registry, "blobs/oneshot") == []
    client.upload_blob("blobs/oneshot", digest_of(b"once"), 4, iter([b"once"]))
    assert client.blob_size("blobs/oneshot", digest_of(b"once")) == 4


def test_a_blob_download_cut_short_is_unavailable(client, proxy):
    digest = upload_bytes(client, "blobs/cut", b"y" * 200_000)
    proxy.truncate_blobs = True
    stream = make_client(proxy.url).open_blob("blobs/cut", digest)
    with pytest.raises(RegistryUnavailable, match="broke after"):
        b"".join(stream)
