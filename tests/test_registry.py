"""The registry client against real distribution registries: open, htpasswd Basic auth, and token auth,
with a fault-injecting proxy in front where a test needs a registry to misbehave."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import urllib3

from tests.support.registry_auth import htpasswd_auth, token_auth
from tests.support.registry_proxy import RegistryProxy
from tests.support.token_issuer import TokenIssuer
from webhook import tls
from webhook.config import parse_config
from webhook.registry import client as registry_module
from webhook.registry.client import (
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    NotFound,
    RateLimited,
    Registries,
    RegistryAuthError,
    RegistryClient,
    RegistryNotAllowed,
    RegistryProtocolError,
    RegistryUnavailable,
    digest_of,
)
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "pa55-w0rd-never-shown"
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


def make_client(url: str, credentials: Path | None = None, **overrides) -> RegistryClient:
    options = {"insecure": True, "connect_timeout": 1.0, "read_timeout": 5.0, "max_connections": 4, **overrides}
    return RegistryClient(url, credentials=str(credentials) if credentials else None, **options)


def docker_config(path: Path, key: str, **entry: str) -> Path:
    path.write_text(json.dumps({"auths": {key: entry}}))
    return path


def basic_entry(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def assert_no_secret(error: BaseException, secrets: tuple[str, ...] = SECRETS) -> None:
    text = "".join(traceback.format_exception(error))
    for secret in secrets:
        assert secret not in text


def upload_bytes(client: RegistryClient, repository: str, data: bytes) -> str:
    digest = digest_of(data)
    client.upload_blob(repository, digest, len(data), [data[i : i + 65536] for i in range(0, len(data), 65536)])
    return digest


def open_uploads(server: RegistryServer, repository: str) -> list[str]:
    """Upload sessions the registry still holds (a cancelled one keeps only its hash state, not `startedat`)."""
    uploads = server.root / "docker/registry/v2/repositories" / repository / "_uploads"
    return sorted(path.parent.name for path in uploads.glob("*/startedat"))


@pytest.fixture(scope="module")
def open_registry():
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("basic")
    with RegistryServer(auth=htpasswd_auth(workdir, USER, PASSWORD)) as server:
        yield server


@pytest.fixture(scope="module")
def issuer():
    issuer = TokenIssuer({USER: PASSWORD}, refresh_tokens={"refresh-token-never-shown": USER}).start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, issuer):
    with RegistryServer(auth=token_auth(tmp_path_factory.mktemp("token"), issuer)) as server:
        yield server


@pytest.fixture
def proxy(open_registry):
    proxy = RegistryProxy(open_registry.host).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def client(open_registry):
    client = make_client(open_registry.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def sample(client):
    return push_sample_image(client, "sample/single", "v1", [3000, 70000], seed=1)


# -- manifests ----------------------------------------------------------------------------------------


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


# -- blobs ----------------------------------------------------------------------------------------------


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


# distribution 2.8 cannot cancel a session once a PUT has written data into it (its purger reclaims it later),
# so for those failures the tests check that the client asked to cancel, and that no blob appeared.


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


# -- redirects ------------------------------------------------------------------------------------------


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


# -- registry trouble ------------------------------------------------------------------------------------


def test_server_errors_are_unavailable_and_429_is_rate_limited_with_retry_after(proxy):
    proxy.faults += [(503, {}), (429, {"Retry-After": "7"})]
    client = make_client(proxy.url)
    with pytest.raises(RegistryUnavailable, match="HTTP 503"):
        client.resolve_digest("sample/single", "v1")
    with pytest.raises(RateLimited) as raised:
        client.resolve_digest("sample/single", "v1")
    assert raised.value.retry_after == 7.0 and "sample/single" in str(raised.value)


def test_an_unreachable_registry_is_unavailable_at_once():
    client = make_client(f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="cannot connect") as raised:
        client.resolve_digest("any/repo", "v1")
    assert time.monotonic() - started < 1.0
    assert "any/repo" in str(raised.value)


@pytest.fixture
def silent_port():
    """A port that accepts connections (into the backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_timeouts_are_honoured(silent_port):
    url = f"http://127.0.0.1:{silent_port}"
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="no answer in time"):
        make_client(url, read_timeout=0.3).resolve_digest("any/repo", "v1")
    assert time.monotonic() - started < 1.5
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable):
        make_client(url, read_timeout=30).resolve_digest("any/repo", "v1", timeout=0.2)
    assert time.monotonic() - started < 1.0


# -- Basic auth ------------------------------------------------------------------------------------------


def test_basic_auth_with_configured_credentials(basic_registry, tmp_path):
    client = make_client(
        basic_registry.url,
        docker_config(tmp_path / "c.json", f"http://{basic_registry.host}/", username=USER, password=PASSWORD),
    )
    pushed = push_sample_image(client, "basic/app", "v1", [500], seed=4)
    assert client.resolve_digest("basic/app", "v1") == pushed.digest


@pytest.mark.parametrize("entry", [basic_entry(password="wrong-password"), None])
def test_basic_auth_refusal_is_an_auth_error_without_secrets(basic_registry, tmp_path, entry):
    credentials = docker_config(tmp_path / "c.json", basic_registry.host, **entry) if entry else None
    with pytest.raises(RegistryAuthError) as raised:
        make_client(basic_registry.url, credentials).resolve_digest("basic/app", "v1")
    assert basic_registry.url in str(raised.value) and "basic/app" in str(raised.value)
    assert_no_secret(raised.value, SECRETS + ("wrong-password", entry["auth"] if entry else PASSWORD))


# -- token auth ------------------------------------------------------------------------------------------


def test_tokens_are_fetched_once_per_scope_and_reused(token_registry, issuer, tmp_path):
    client = make_client(token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()))
    pushed = push_sample_image(client, "token/app", "v1", [100, 200], seed=5)
    assert issuer.hits("repository:token/app:pull,push") == 1
    for _ in range(3):
        assert client.resolve_digest("token/app", "v1") == pushed.digest
    assert issuer.hits("repository:token/app:pull") == 1
    with pytest.raises(NotFound):
        client.resolve_digest("token/other", "v1")
    assert issuer.hits("repository:token/other:pull") == 1
    assert all(request.user == USER for request in issuer.requests if request.granted and request.user)


def test_concurrent_requests_share_one_token_fetch(token_registry, issuer, tmp_path):
    writer = make_client(token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()))
    pushed = push_sample_image(writer, "token/busy", "v1", [100], seed=9)
    reader = make_client(
        token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()), max_connections=8
    )
    before = issuer.hits("repository:token/busy:pull")
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(lambda _: reader.resolve_digest("token/busy", "v1"), range(32)))
    assert digests == [pushed.digest] * 32
    assert issuer.hits("repository:token/busy:pull") == before + 1


def test_a_token_the_registry_refuses_is_fetched_again_once(token_registry, issuer, tmp_path):
    client = make_client(token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()))
    push_sample_image(client, "token/stale", "v1", [100], seed=6)
    client.resolve_digest("token/stale", "v1")
    key = (issuer.realm, issuer.service, ("repository:token/stale:pull",))
    client._auth.cache.put(key, "not-a-valid-token", 300)
    before = issuer.hits("repository:token/stale:pull")
    assert client.resolve_digest("token/stale", "v1").startswith("sha256:")
    assert issuer.hits("repository:token/stale:pull") == before + 1


def test_anonymous_tokens_pull_but_cannot_push(token_registry, issuer, tmp_path):
    writer = make_client(token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()))
    pushed = push_sample_image(writer, "token/public", "v1", [100], seed=7)
    anonymous = make_client(token_registry.url)
    assert anonymous.resolve_digest("token/public", "v1") == pushed.digest
    with pytest.raises(RegistryAuthError, match="access denied"):
        anonymous.put_manifest("token/public", "v2", anonymous.get_manifest("token/public", "v1").data, OCI_MANIFEST)


def test_an_identity_token_is_used_as_a_refresh_token(token_registry, issuer, tmp_path):
    credentials = docker_config(tmp_path / "c.json", token_registry.host, identitytoken="refresh-token-never-shown")
    client = make_client(token_registry.url, credentials)
    push_sample_image(client, "token/identity", "v1", [100], seed=8)
    assert [r.method for r in issuer.requests if "repository:token/identity:pull,push" in r.scopes] == ["POST"]


def test_token_service_refusal_is_an_auth_error_without_secrets(token_registry, tmp_path):
    credentials = docker_config(tmp_path / "c.json", token_registry.host, **basic_entry(password="wrong-password"))
    with pytest.raises(RegistryAuthError, match="token service refused the configured credentials") as raised:
        make_client(token_registry.url, credentials).resolve_digest("token/app", "v1")
    assert token_registry.url in str(raised.value) and "token/app" in str(raised.value)
    assert_no_secret(raised.value, ("wrong-password", basic_entry(password="wrong-password")["auth"]))


# -- TLS with a private CA ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_ca_registry(tmp_path_factory):
    """A registry serving HTTPS for 127.0.0.1 with a certificate from a CA no system trusts; and that CA's file."""
    workdir = tmp_path_factory.mktemp("private-ca")
    ca = tls.generate_ca("ccr-webhook test CA")
    tls.issue_serving_cert(ca, [], ["127.0.0.1"]).write(workdir / "tls.crt", workdir / "tls.key")
    (workdir / "ca.crt").write_bytes(ca.cert_pem)
    with RegistryServer(tls=(workdir / "tls.crt", workdir / "tls.key")) as server:
        yield server, workdir / "ca.crt"


def test_a_registry_with_a_private_ca_fails_tls_without_ca_file_and_is_trusted_with_it(private_ca_registry, tmp_path):
    server, ca_file = private_ca_registry
    assert server.url == f"https://{server.host}"
    with pytest.raises(RegistryUnavailable, match="TLS failed: .*certificate verify failed") as raised:
        make_client(server.url, insecure=False).resolve_digest("tls/app", "v1")
    assert server.url in str(raised.value)
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(tls.generate_ca("another CA").cert_pem)
    with pytest.raises(RegistryUnavailable, match="TLS failed: .*certificate verify failed"):
        make_client(server.url, insecure=False, ca_file=str(other_ca)).resolve_digest("tls/app", "v1")
    # caFile in the configuration reaches the client, for the CCR and for an upstream alike
    registries = Registries(
        parse_config(
            {
                "ccr": {"registry": server.host, "caFile": str(ca_file)},
                "upstreams": [{"registry": "mirror.local:5000", "endpoint": server.url, "caFile": str(ca_file)}],
            }
        )
    )
    pushed = push_sample_image(registries.ccr, "tls/app", "v1", [500], seed=10)
    assert registries.upstream("mirror.local:5000").resolve_digest("tls/app", "v1") == pushed.digest
    registries.close()


# -- the factory -----------------------------------------------------------------------------------------


def test_registries_gives_configured_clients_once_and_refuses_any_other_host():
    config = parse_config(
        {
            "ccr": {"registry": "ccr.local:5000", "endpoint": "http://127.0.0.1:1", "insecure": True},
            "upstreams": [
                {"registry": "docker.io", "redirectHosts": ["*.cloudflare.docker.com"]},
                {"registry": "quay.io"},
            ],
            "resolver": {"connectTimeoutSeconds": 0.5, "readTimeoutSeconds": 2},
        }
    )
    registries = Registries(config)
    assert registries.upstream("docker.io").redirect_hosts == ("*.cloudflare.docker.com",)
    assert registries.upstream("quay.io").redirect_hosts is None and registries.ccr.redirect_hosts is None
    assert registries.upstream("docker.io").token_hosts == ("auth.docker.io",)
    assert registries.upstream("quay.io").token_hosts is None and registries.ccr.token_hosts is None
    assert registries.ccr.endpoint == "http://127.0.0.1:1"
    assert registries.upstream("docker.io").endpoint == "https://registry-1.docker.io"
    assert registries.upstream("docker.io") is registries.upstream("docker.io")
    assert registries.upstream("quay.io").read_timeout == 2
    for host in ("evil.example.com", "ccr.local:5000", "registry-1.docker.io"):
        with pytest.raises(RegistryNotAllowed, match="not a configured upstream"):
            registries.upstream(host)
