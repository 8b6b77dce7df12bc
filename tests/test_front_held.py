"""Held blobs sent from the registry's files: a real distribution registry with Basic auth, the front beside it
with `front.registryStorageDir` on the registry's storage, and what the front must never serve from the files."""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from tests.support.local_registry import client as make_client
from tests.support.registry_auth import PASSWORD, USER, basic_entry, docker_config, htpasswd_auth
from tests.test_front import metric
from webhook import tls
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import PushedImage, push_sample_image

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
REPOSITORY = "team/app"
CREDENTIALS = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


class Held:
    """A registry with Basic auth holding one image, and a way to start fronts beside it."""

    def __init__(self, registry: RegistryServer, image: PushedImage, workdir: Path) -> None:
        self.registry, self.image, self.workdir = registry, image, workdir
        self.layer = image.blobs[0]
        self.data = b""

    def front(self, **front: object) -> LocalFront:
        settings = {"ccr": {"registry": "ccr.test", "endpoint": self.registry.url, "insecure": True}, "front": front}
        return LocalFront(settings).start()

    def blob_path(self, repository: str = REPOSITORY, digest: str | None = None) -> str:
        return f"/v2/{repository}/blobs/{digest or self.layer}"


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    workdir = tmp_path_factory.mktemp("held")
    with RegistryServer(auth=htpasswd_auth(workdir, USER, PASSWORD)) as registry:
        client = make_client(registry.url, docker_config(workdir / "config.json", registry.host, **basic_entry()))
        image = push_sample_image(client, REPOSITORY, "v1", [3 * MiB + 17], seed=401)
        made = Held(registry, image, workdir)
        made.data = urllib3.request("GET", registry.url + made.blob_path(), headers=CREDENTIALS, timeout=30).data
        assert hashlib.sha256(made.data).hexdigest() == made.layer[7:]
        yield made


@pytest.fixture(scope="module")
def front(held: Held) -> Iterator[LocalFront]:
    started = held.front(registryStorageDir=str(held.registry.root))
    yield started
    started.cleanup()


def get(front: LocalFront, path: str, **headers: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request("GET", front.url + path, headers=headers, retries=False, timeout=30)


def held_bytes(front: LocalFront) -> float:
    return metric(front, 'ccr_front_served_bytes_total{source="held"}')


def test_a_held_blob_comes_from_the_registrys_file_with_the_registrys_headers(held: Held, front: LocalFront) -> None:
    before = held_bytes(front)
    answer = get(front, held.blob_path(), **CREDENTIALS)
    assert answer.status == 200 and answer.data == held.data
    assert answer.headers["Content-Length"] == str(len(held.data))
    assert answer.headers["Docker-Content-Digest"] == held.layer
    assert answer.headers["Etag"] == f'"{held.layer}"'
    assert held_bytes(front) - before == len(held.data)
    head = urllib3.request("HEAD", front.url + held.blob_path(), headers=CREDENTIALS, retries=False, timeout=30)
    assert head.status == 200 and head.headers["Content-Length"] == str(len(held.data))


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=100-1048675", 100, 1048675), ("bytes=-17", -17, None), ("bytes=3145728-", 3145728, None)],
)
def test_a_range_of_a_held_blob_is_the_registrys_206_with_those_bytes(
    held: Held, front: LocalFront, header: str, first: int, last: int | None
) -> None:
    answer = get(front, held.blob_path(), Range=header, **CREDENTIALS)
    wanted = held.data[first : None if last is None else last + 1]
    assert answer.status == 206 and answer.data == wanted
    start = first % len(held.data)
    assert answer.headers["Content-Range"] == f"bytes {start}-{start + len(wanted) - 1}/{len(held.data)}"


def test_a_range_past_the_end_is_416_with_an_empty_body(held: Held, front: LocalFront) -> None:
    answer = get(front, held.blob_path(), Range=f"bytes={len(held.data)}-", **CREDENTIALS)
    assert answer.status == 416 and answer.data == b""
    assert answer.headers["Content-Range"] == f"bytes */{len(held.data)}"
    assert get(front, held.blob_path(), **CREDENTIALS).status == 200, "the connection pool is still usable"


def test_the_registry_still_decides_who_reads_nothing_comes_from_the_files_without_its_yes(
    held: Held, front: LocalFront
) -> None:
    before = held_bytes(front)
    assert get(front, held.blob_path()).status == 401
    wrong = "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()
    assert get(front, held.blob_path(), Authorization=wrong).status == 401
    assert held_bytes(front) == before


def test_a_blob_its_repository_does_not_link_is_not_served_though_the_file_exists(
    held: Held, front: LocalFront
) -> None:
    before = held_bytes(front)
    other = get(front, held.blob_path("team/other"), **CREDENTIALS)
    assert other.status == 404 and other.data != held.data
    for repository in ("team/app/../app", "team/x/../app", "team/app/%2e%2e/app", "team/./app"):
        connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
        try:  # the path as it is, dot-segments and all (urllib3 would resolve them)
            connection.request("GET", held.blob_path(repository), headers=CREDENTIALS)
            connection.getresponse().read()  # what it answers is the request grammar's business, not the files'
        finally:
            connection.close()
    assert held_bytes(front) == before


def test_files_the_front_cannot_trust_send_it_through_the_registry_instead(held: Held, tmp_path: Path) -> None:
    layout = Path("docker/registry/v2")
    hex_digest = held.layer[7:]
    link = layout / "repositories" / REPOSITORY / "_layers/sha256" / hex_digest / "link"
    (tmp_path / link).parent.mkdir(parents=True)
    shutil.copy(held.registry.root / link, tmp_path / link)
    data = tmp_path / layout / "blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    data.parent.mkdir(parents=True)
    data.write_bytes(held.data[:-1])  # one byte short: not the blob the registry describes
    front = held.front(registryStorageDir=str(tmp_path))
    try:
        answer = get(front, held.blob_path(), **CREDENTIALS)
        assert answer.status == 200 and answer.data == held.data
        assert held_bytes(front) == 0
        assert metric(front, 'ccr_front_served_bytes_total{source="ccr"}') == len(held.data)
    finally:
        front.cleanup()


def test_over_tls_a_held_blob_is_copied_in_large_pieces(held: Held, tmp_path: Path) -> None:
    ca = tls.generate_ca("held")
    tls.issue_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(tmp_path / "f.crt", tmp_path / "f.key")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    front = held.front(
        registryStorageDir=str(held.registry.root), tlsCert=str(tmp_path / "f.crt"), tlsKey=str(tmp_path / "f.key")
    )
    try:
        pool = urllib3.PoolManager(ca_certs=str(tmp_path / "ca.crt"), retries=False, timeout=30)
        url = f"https://127.0.0.1:{front.port}{held.blob_path()}"
        whole = pool.request("GET", url, headers=CREDENTIALS)
        assert whole.status == 200 and whole.data == held.data
        part = pool.request("GET", url, headers={"Range": "bytes=5-4194303", **CREDENTIALS})
        assert part.status == 206 and part.data == held.data[5:]
        metrics = pool.request("GET", f"https://127.0.0.1:{front.port}/metrics").data.decode()
        sample = re.search(r'^ccr_front_served_bytes_total\{source="held"\} (\S+)$', metrics, re.MULTILINE)
        assert sample is not None and float(sample.group(1)) == 2 * len(held.data) - 5
    finally:
        front.cleanup()
