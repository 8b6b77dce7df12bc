"""The registry client's redirects: blob downloads follow them to allowed storage hosts, without our credentials."""

from __future__ import annotations

import pytest

from tests.support.local_registry import client as make_client
from tests.support.local_registry import upload_bytes
from tests.support.registry_auth import basic_entry, docker_config
from tests.support.registry_proxy import RegistryProxy
from webhook.registry.client import (
    RegistryProtocolError,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def basic_front(basic_registry):
    front = RegistryProxy(basic_registry.host).start()
    yield front
    front.stop()


def test_blob_redirects_to_another_host_never_carry_our_authorization(basic_front, open_registry, tmp_path):
    storage = RegistryProxy(open_registry.host, name="localhost").start()
    try:
        data = b"stored elsewhere" * 5000
        credentials = docker_config(tmp_path / "config.json", basic_front.url.removeprefix("http://"), **basic_entry())
        authed = make_client(basic_front.url, credentials, redirect_hosts=("localhost",))
        digest = upload_bytes(authed, "redirect/app", data)
        upload_bytes(make_client(open_registry.url), "redirect/app", data)
        basic_front.redirect_blobs_to = storage.url
        with authed.open_blob("redirect/app", digest) as stream:
            assert b"".join(stream) == data
        assert [auth for method, _, auth in basic_front.requests if method == "GET"][-1].startswith("Basic ")
        assert storage.requests and all(auth is None for _, _, auth in storage.requests)
    finally:
        storage.stop()


def test_blob_redirects_stop_after_three_hops_and_keep_auth_on_the_same_host(basic_front, tmp_path):
    credentials = docker_config(tmp_path / "config.json", basic_front.url, **basic_entry())
    authed = make_client(basic_front.url, credentials)
    digest = upload_bytes(authed, "redirect/loop", b"loop")
    basic_front.redirect_blobs_to = basic_front.url
    basic_front.requests.clear()
    with pytest.raises(RegistryProtocolError, match="more than 3 redirects"):
        authed.open_blob("redirect/loop", digest)
    gets = [auth for method, _, auth in basic_front.requests if method == "GET"]
    assert len(gets) == 4 and all(auth and auth.startswith("Basic ") for auth in gets)


@pytest.mark.parametrize(("target", "insecure"), [("ftp://127.0.0.1:1", True), ("http://localhost:1", False)])
def test_blob_redirects_to_plain_http_or_other_schemes_are_refused(client, proxy, target, insecure):
    digest = upload_bytes(client, "redirect/scheme", b"scheme")
    proxy.redirect_blobs_to = target
    with pytest.raises(RegistryProtocolError, match="refusing a redirect"):
        make_client(proxy.url, insecure=insecure).open_blob("redirect/scheme", digest)


@pytest.mark.parametrize(
    ("redirect_hosts", "storage_host", "followed"),
    [
        (None, "localhost", False),  # no list: any name resolving to public addresses only, so not localhost
        (None, "127.0.0.1", False),  # ... and never an IP address
        (None, "2130706433", False),  # ... in any spelling
        (("127.0.0.1",), "127.0.0.1", True),  # unless listed
        (("*host",), "localhost", True),
        (("storage.example",), "localhost", False),
        ((), "localhost", False),  # an empty list: the registry's own endpoint only
    ],
)
def test_blob_redirects_go_only_to_storage_hosts_the_configuration_allows(
    client, proxy, open_registry, redirect_hosts, storage_host, followed
):
    data = b"stored on a storage host" * 1000
    digest = upload_bytes(client, "redirect/hosts", data)
    storage = RegistryProxy(open_registry.host, name=storage_host).start()
    try:
        proxy.redirect_blobs_to = storage.url
        reader = make_client(proxy.url, redirect_hosts=redirect_hosts)
        if followed:
            with reader.open_blob("redirect/hosts", digest) as stream:
                assert b"".join(stream) == data
            assert storage.requests
        else:
            with pytest.raises(RegistryProtocolError, match=f"refusing a redirect to .*{storage_host}"):
                reader.open_blob("redirect/hosts", digest)
            assert storage.requests == []  # never contacted
    finally:
        storage.stop()


def test_blob_redirects_carrying_user_info_are_refused(client, proxy, open_registry):
    digest = upload_bytes(client, "redirect/userinfo", b"user info")
    storage = RegistryProxy(open_registry.host, name="localhost").start()
    try:
        proxy.redirect_blobs_to = f"http://user:secret@localhost:{storage.port}"
        with pytest.raises(RegistryProtocolError, match="refusing a redirect to a URL with user info") as raised:
            make_client(proxy.url).open_blob("redirect/userinfo", digest)
        assert "secret" not in str(raised.value) and storage.requests == []
    finally:
        storage.stop()


def test_manifest_redirects_are_not_followed(proxy):
    proxy.faults.append((302, {"Location": "http://localhost:1/v2/x/manifests/v1"}))
    with pytest.raises(RegistryProtocolError, match="redirect to localhost:1, not followed"):
        make_client(proxy.url).resolve_digest("sample/single", "v1")
    assert len(proxy.requests) == 1
