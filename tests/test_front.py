"""The CCR front as a real process between real distribution registries: the upstream (behind a proxy that
counts, paces, holds, cuts or corrupts blob downloads) and the CCR it commits into."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from tests.support.local_registry import client as make_client
from tests.support.registry_auth import htpasswd_auth
from tests.support.registry_proxy import RegistryProxy
from tests.support.waiting import wait_until
from webhook import tls
from webhook.registry.client import MANIFEST_MEDIA_TYPES, NotFound, RegistryClient
from webhook.registry.errors import RegistryServerError
from webhook.registry.oci import child_manifests, image_blobs
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import PushedImage, push_sample_image

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PREFIX = "up"


class Scene:
    """The upstream registry behind a proxy, the CCR registry, and a front between them."""

    def __init__(self, upstream_server: RegistryServer, ccr_server: RegistryServer, repository: str) -> None:
        self.upstream, self.ccr_server = upstream_server, ccr_server
        self.repository = repository  # upstream's name; the front serves it as up/<repository>
        self.proxy = RegistryProxy(upstream_server.host).start()
        self.ccr = make_client(ccr_server.url)
        self.fronts: list[LocalFront] = []

    @property
    def target(self) -> str:
        return f"{PREFIX}/{self.repository}"

    def push(self, layer_sizes: list[int], seed: int, platforms: int = 1) -> PushedImage:
        return push_sample_image(make_client(self.upstream.url), self.repository, "v1", layer_sizes, seed, platforms)

    def front(self, ccr: dict[str, object] | None = None, **front: object) -> LocalFront:
        """A front on the CCR registry, `front` its settings; `ccr` overrides the CCR's (a replica's own registry)."""
        settings = {
            "ccr": {"registry": "ccr.test", "endpoint": self.ccr_server.url, "insecure": True, **(ccr or {})},
            "upstreams": [
                {"registry": "upstream.test", "endpoint": self.proxy.url, "insecure": True, "prefix": PREFIX}
            ],
            "resolver": {"readTimeoutSeconds": 30},
            "front": front,
        }
        started = LocalFront(settings).start()
        self.fronts.append(started)
        return started

    def blob_gets(self, digest: str | None = None) -> int:
        """How many blob downloads the upstream served (of `digest`, or of any blob)."""
        return sum(
            1
            for method, path, _ in list(self.proxy.requests)
            if method == "GET" and "/blobs/" in path and (digest is None or path.endswith(digest))
        )

    # Polled while the front commits: the filesystem driver answers 500 for an object being written (its writes
    # are not atomic), which means "not yet" here as it does to the front.
    def ccr_tag(self, tag: str) -> str | None:
        try:
            return self.ccr.resolve_digest(self.target, tag)
        except (NotFound, RegistryServerError):
            return None

    def ccr_has_blob(self, digest: str) -> bool:
        try:
            return self.ccr.blob_size(self.target, digest) is not None
        except RegistryServerError:
            return False

    def ccr_has_manifest(self, digest: str) -> bool:
        try:
            return self.ccr.has_manifest(self.target, digest)
        except RegistryServerError:
            return False

    def close(self) -> None:
        if self.proxy.blob_gate is not None:
            self.proxy.blob_gate.set()
        for front in self.fronts:
            front.cleanup()
        self.proxy.stop()


@pytest.fixture
def scene(upstream: RegistryServer, ccr: RegistryServer, request: pytest.FixtureRequest) -> Iterator[Scene]:
    made = Scene(upstream, ccr, "apps/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-"))
    yield made
    made.close()


class Reader(threading.Thread):
    """One GET through the front, read in small pieces so a test sees how far it got."""

    def __init__(self, front: LocalFront, path: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.front, self.path, self.headers = front, path, headers or {}
        self.status: int | None = None
        self.length: int | None = None
        self.answer: dict[str, str] = {}
        self.received = bytearray()
        self.ended = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.front.port, timeout=60)
        try:
            connection.request("GET", self.path, headers=self.headers)
            response = connection.getresponse()
            self.status, self.answer = response.status, dict(response.getheaders())
            self.length = int(response.getheader("Content-Length") or 0)
            while chunk := response.read1(64 * 1024):
                self.received += chunk
        except OSError:
            pass
        finally:
            connection.close()
            self.ended.set()

    def finish(self) -> Reader:
        assert self.ended.wait(60), f"GET {self.path} did not end"
        return self

    @property
    def complete(self) -> bool:
        return self.length is not None and len(self.received) == self.length


def get(front: LocalFront, path: str, headers: dict[str, str] | None = None) -> Reader:
    reader = Reader(front, path, headers)
    reader.start()
    return reader.finish()


def blob_path(scene: Scene, digest: str) -> str:
    return f"/v2/{scene.target}/blobs/{digest}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def metric(front: LocalFront, name: str) -> float:
    """The value of one sample of the front's metrics (0 when absent)."""
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", front.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def readers_on_the_flight(front: LocalFront, path: str, count: int) -> list[Reader]:
    """`count` readers of blob `path`, once all of them follow its (held) fetch."""
    readers = [Reader(front, path) for _ in range(count)]
    for reader in readers:
        reader.start()
    wait_until(lambda: metric(front, "ccr_front_flight_readers") == count, what=f"{count} readers on the flight")
    return readers


def nothing_committed(scene: Scene, pushed: PushedImage, blob: str) -> bool:
    """Neither the failed blob nor the image is in the CCR (other blobs that verified may be)."""
    return not scene.ccr.has_manifest(scene.target, pushed.digest) and not scene.ccr_has_blob(blob)


def test_concurrent_readers_of_a_cold_blob_share_one_upstream_fetch(scene: Scene) -> None:
    pushed = scene.push([3 * MiB], seed=101)
    layer = pushed.blobs[0]
    scene.proxy.blob_gate = threading.Event()
    front = scene.front()
    readers = readers_on_the_flight(front, blob_path(scene, layer), 4)
    scene.proxy.blob_gate.set()
    for reader in readers:
        reader.finish()
        assert reader.status == 200 and reader.complete
        assert sha256(bytes(reader.received)) == layer
    assert scene.blob_gets(layer) == 1
    wait_until(lambda: scene.ccr_has_blob(layer), what="the blob committed to the CCR")
    again = get(front, blob_path(scene, layer))
    assert sha256(bytes(again.received)) == layer and scene.blob_gets(layer) == 1
    assert metric(front, 'ccr_front_served_bytes_total{source="ccr"}') >= 3 * MiB
    assert metric(front, 'ccr_front_served_bytes_total{source="flight"}') >= 4 * 3 * MiB
    assert metric(front, "ccr_front_upstream_bytes_total") == 3 * MiB


def test_a_late_reader_gets_the_bytes_so_far_then_follows(scene: Scene) -> None:
    pushed = scene.push([4 * MiB], seed=102)
    layer = pushed.blobs[0]
    scene.proxy.blob_gate = threading.Event()
    front = scene.front()
    first = Reader(front, blob_path(scene, layer))
    first.start()
    wait_until(lambda: len(first.received) >= 2 * MiB - MiB // 2, what="the first reader at the held half")
    late = Reader(front, blob_path(scene, layer))
    late.start()
    wait_until(lambda: len(late.received) >= 2 * MiB - MiB // 2, what="the late reader catching up from the spool")
    assert not late.ended.is_set()
    scene.proxy.blob_gate.set()
    for reader in (first, late):
        assert reader.finish().complete and sha256(bytes(reader.received)) == layer
    assert scene.blob_gets(layer) == 1


def test_range_requests_during_the_fetch_and_after_it(scene: Scene) -> None:
    pushed = scene.push([2 * MiB], seed=103)
    layer = pushed.blobs[0]
    whole = b"".join(make_client(scene.upstream.url).open_blob(scene.repository, layer))
    scene.proxy.blob_gate = threading.Event()
    front = scene.front()
    early = Reader(front, blob_path(scene, layer), {"Range": "bytes=1000-1999"})  # inside the held first half
    early.start()
    wait_until(lambda: len(early.received) == 999, what="all but the last byte of the range, before verification")
    assert early.status == 206 and early.answer["Content-Range"] == f"bytes 1000-1999/{len(whole)}"
    tail = Reader(front, blob_path(scene, layer), {"Range": "bytes=-100"})
    tail.start()
    assert not early.ended.is_set()
    scene.proxy.blob_gate.set()
    assert early.finish().status == 206 and bytes(early.received) == whole[1000:2000]
    assert tail.finish().status == 206 and bytes(tail.received) == whole[-100:]
    wait_until(lambda: scene.ccr_has_blob(layer), what="the blob committed")
    resumed = get(front, blob_path(scene, layer), {"Range": f"bytes={MiB}-"})
    assert resumed.status == 206 and bytes(resumed.received) == whole[MiB:]
    assert scene.blob_gets(layer) == 1


def test_range_beyond_the_end_is_refused(scene: Scene) -> None:
    pushed = scene.push([MiB], seed=104)
    front = scene.front()
    refused = get(front, blob_path(scene, pushed.blobs[0]), {"Range": f"bytes={2 * MiB}-"})
    assert refused.status == 416 and refused.answer["Content-Range"] == f"bytes */{MiB}"


@pytest.mark.parametrize("fault", ["cut", "corrupt", "slow"])
def test_a_failed_fetch_cuts_every_reader_and_commits_nothing(scene: Scene, fault: str) -> None:
    pushed = scene.push([2 * MiB], seed=105 + ["cut", "corrupt", "slow"].index(fault))
    layer = pushed.blobs[0]
    scene.proxy.truncate_blobs = fault == "cut"
    scene.proxy.corrupt_blobs = fault == "corrupt"
    scene.proxy.blob_bytes_per_second = 256 * 1024 if fault == "slow" else 0
    scene.proxy.blob_gate = threading.Event()
    front = scene.front(fetchDeadlineSeconds=2) if fault == "slow" else scene.front()
    manifest = get(front, f"/v2/{scene.target}/manifests/v1", {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)})
    assert manifest.status == 200 and sha256(bytes(manifest.received)) == pushed.digest
    readers = readers_on_the_flight(front, blob_path(scene, layer), 3)
    scene.proxy.blob_gate.set()
    for reader in readers:
        reader.finish()
        assert reader.status == 200
        assert not reader.complete, "a reader must never get a whole blob with wrong bytes"
    outcome = {"cut": "upstream-error", "corrupt": "invalid-content", "slow": "too-slow"}[fault]
    wait_until(lambda: metric(front, f'ccr_front_fetches_total{{outcome="{outcome}"}}') >= 1, what=outcome)
    wait_until(lambda: "not committed" in front.log(), what="the image commit given up")
    assert nothing_committed(scene, pushed, layer)
    assert scene.blob_gets(layer) == 1


def missing_below(mirror: RegistryClient, repository: str, pushed: PushedImage) -> str | None:
    """A manifest of `pushed` the CCR shows although a child manifest or blob of it is missing, if any."""
    for digest in (*pushed.manifests, pushed.digest):
        if not mirror.has_manifest(repository, digest):
            continue
        manifest = mirror.get_manifest(repository, digest)
        if manifest.is_index:
            if not all(mirror.has_manifest(repository, child.digest) for child in child_manifests(manifest)):
                return f"index {digest} without all its manifests"
        elif not all(mirror.blob_size(repository, blob.digest) is not None for blob in image_blobs(manifest)):
            return f"manifest {digest} without all its blobs"
    return None


def test_the_ccr_never_shows_a_manifest_whose_blobs_are_missing(scene: Scene) -> None:
    pushed = scene.push([MiB, 2 * MiB], seed=110, platforms=2)
    scene.proxy.blob_bytes_per_second = 4 * MiB
    front = scene.front()
    mirror = make_client(scene.ccr_server.url)
    problems: list[str] = []
    polls = []
    done = threading.Event()

    def watch() -> None:
        for _ in range(100_000):
            if done.is_set():
                return
            polls.append(1)
            problem = missing_below(mirror, scene.target, pushed)
            if problem:
                problems.append(problem)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert get(front, f"/v2/{scene.target}/manifests/v1", {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}).complete
    wait_until(lambda: scene.ccr_tag("v1") == pushed.digest, 60, "the index committed and tagged")
    done.set()
    watcher.join(30)
    assert not problems, problems
    assert len(polls) > 10
    assert len(pushed.blobs) == 6 and all(scene.blob_gets(digest) == 1 for digest in pushed.blobs)


def test_a_restart_mid_fetch_fails_the_reader_then_fetches_again(scene: Scene) -> None:
    pushed = scene.push([2 * MiB], seed=111)
    layer = pushed.blobs[0]
    scene.proxy.blob_gate = threading.Event()
    front = scene.front()
    reader = Reader(front, blob_path(scene, layer))
    reader.start()
    wait_until(lambda: len(reader.received) >= MiB // 2, what="the reader halfway")
    spool = Path(front.workdir / "spool" / "blobs")
    assert any(spool.iterdir())
    front.kill()
    assert not reader.finish().complete
    front.start()
    assert not any(spool.iterdir()), "a fetch cut by the restart is never resumed from its spool file"
    scene.proxy.blob_gate.set()
    again = get(front, blob_path(scene, layer))
    assert again.complete and sha256(bytes(again.received)) == layer
    wait_until(lambda: scene.ccr_has_blob(layer), what="the blob committed after the restart")
    assert scene.blob_gets(layer) == 2


def test_a_full_spool_refuses_new_fetches_with_retry_after(scene: Scene) -> None:
    pushed = scene.push([2 * MiB], seed=112)
    front = scene.front(spoolMaxBytes=MiB)
    refused = get(front, blob_path(scene, pushed.blobs[0]))
    assert refused.status == 503 and refused.answer["Retry-After"].isdigit()
    assert metric(front, 'ccr_front_fetches_total{outcome="spool-full"}') == 1
    assert nothing_committed(scene, pushed, pushed.blobs[0])


def test_a_repository_outside_every_upstream_prefix_is_404_and_upstream_never_asked(scene: Scene) -> None:
    pushed = scene.push([MiB], seed=113)
    front = scene.front()
    for path in (f"/v2/{scene.repository}/manifests/v1", f"/v2/other/{scene.repository}/blobs/{pushed.blobs[0]}"):
        assert get(front, path).status == 404
    assert scene.proxy.requests == []


def test_requests_outside_the_grammar_reach_neither_the_ccr_nor_upstream(scene: Scene) -> None:
    scene.push([MiB], seed=115)
    front = scene.front()
    # The CCR registry itself answers this one 301 Location: /v2/up/.../etc/passwd; upstream was sent the second.
    traversal = get(front, f"/v2/{scene.target}/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd")
    injected = get(front, f"/v2/{scene.target}/manifests/1.0%0d%0aX-Injected:%20yes")
    for answer, code in ((traversal, "DIGEST_INVALID"), (injected, "TAG_INVALID")):
        assert answer.status == 400 and "Location" not in answer.answer
        assert json.loads(bytes(answer.received))["errors"][0]["code"] == code
    assert scene.proxy.requests == []
    assert metric(front, 'ccr_front_requests_total{route="blob",status="400"}') == 1
    assert metric(front, 'ccr_front_requests_total{route="manifest",status="400"}') == 1


def test_writes_are_refused_and_sigterm_stops_it(scene: Scene) -> None:
    front = scene.front()
    connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    connection.request("POST", f"/v2/{scene.target}/blobs/uploads/")
    assert connection.getresponse().status == 405
    assert front.terminate() == 0, "SIGTERM stops the front cleanly"


def head(front: LocalFront, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    connection.request("HEAD", path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_a_tag_is_committed_only_where_upstream_resolved_it(scene: Scene) -> None:
    first = scene.push([MiB], seed=114)
    front = scene.front()
    accept = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
    blob = head(front, blob_path(scene, first.blobs[0]))
    assert (blob.status, blob.getheader("Content-Length")) == (200, str(MiB)) and scene.blob_gets() == 0
    resolved = head(front, f"/v2/{scene.target}/manifests/v1", accept)  # how containerd resolves a tag
    assert resolved.status == 200 and resolved.getheader("Docker-Content-Digest") == first.digest
    assert get(front, f"/v2/{scene.target}/manifests/v1", accept).answer["Docker-Content-Digest"] == first.digest
    wait_until(lambda: scene.ccr_tag("v1") == first.digest, what="the tag committed")
    second = scene.push([MiB], seed=116)  # upstream moves v1
    by_digest = get(front, f"/v2/{scene.target}/manifests/{second.digest}", accept)
    assert by_digest.complete and sha256(bytes(by_digest.received)) == second.digest
    wait_until(lambda: scene.ccr_has_manifest(second.digest), what="the second image committed")
    assert scene.ccr_tag("v1") == first.digest, "a pull by digest never moves a tag"


def test_skopeo_pulls_a_cold_image_through_the_front(scene: Scene) -> None:
    pushed = scene.push([MiB, 3 * MiB], seed=115)
    front = scene.front()
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run(
            [
                "skopeo",
                "copy",
                "--src-tls-verify=false",
                f"docker://{front.host}/{scene.target}:v1",
                f"dir:{directory}/image",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        files = {name: Path(directory, "image", name).read_bytes() for name in os.listdir(Path(directory, "image"))}
    for digest in pushed.blobs:
        assert sha256(files[digest.removeprefix("sha256:")]) == digest
    wait_until(lambda: scene.ccr_has_manifest(pushed.digest), what="the image committed")
    assert all(scene.blob_gets(digest) == 1 for digest in pushed.blobs)


def test_over_tls_the_ccr_keeps_its_access_control_and_the_front_pushes_with_its_own(
    upstream: RegistryServer,
    tmp_path: Path,
) -> None:
    ca = tls.generate_ca("front tests")
    tls.issue_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(tmp_path / "tls.crt", tmp_path / "tls.key")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    with RegistryServer(auth=htpasswd_auth(tmp_path, "puller", "secret")) as locked:
        credentials = tmp_path / "config.json"
        token = base64.b64encode(b"puller:secret").decode()
        credentials.write_text(json.dumps({"auths": {locked.host: {"auth": token}}}))
        scene = Scene(upstream, locked, "apps/tls-and-access")
        try:
            pushed = scene.push([MiB], seed=117)
            front = LocalFront(
                {
                    "ccr": {
                        "registry": "ccr.test",
                        "endpoint": locked.url,
                        "insecure": True,
                        "credentials": str(credentials),
                    },
                    "upstreams": [
                        {"registry": "upstream.test", "endpoint": scene.proxy.url, "insecure": True, "prefix": PREFIX}
                    ],
                    "front": {"tlsCert": str(tmp_path / "tls.crt"), "tlsKey": str(tmp_path / "tls.key")},
                }
            ).start()
            scene.fronts.append(front)
            pool = urllib3.PoolManager(ca_certs=str(tmp_path / "ca.crt"))
            url = f"https://127.0.0.1:{front.port}/v2/{scene.target}/blobs/{pushed.blobs[0]}"
            refused = pool.request("GET", url, retries=False)
            assert refused.status == 401 and "Basic" in refused.headers["WWW-Authenticate"]
            assert scene.proxy.requests == [], "an unauthenticated node never makes the front fetch"
            allowed = pool.request("GET", url, headers={"Authorization": f"Basic {token}"}, retries=False)
            assert allowed.status == 200 and sha256(allowed.data) == pushed.blobs[0]
            scene.ccr = make_client(locked.url, credentials)
            wait_until(lambda: scene.ccr_has_blob(pushed.blobs[0]), what="the blob committed with the front's account")
        finally:
            scene.close()


def test_a_5xx_from_the_ccr_for_held_content_is_asked_again_not_passed_to_the_node(scene, ccr):
    """The registry's filesystem driver answers 500 for an object another replica is committing at that moment."""
    pushed = push_sample_image(scene.ccr, scene.target, "v1", [300_000], seed=131)
    blob = pushed.blobs[0]
    flaky_ccr = RegistryProxy(ccr.host).start()
    try:
        flaky_ccr.faults = [(500, {}), (503, {})]
        settings = {
            "ccr": {"registry": "ccr.test", "endpoint": flaky_ccr.url, "insecure": True},
            "upstreams": [
                {"registry": "upstream.test", "endpoint": scene.proxy.url, "insecure": True, "prefix": PREFIX}
            ],
        }
        front = LocalFront(settings).start()
        scene.fronts.append(front)
        reader = Reader(front, f"/v2/{scene.target}/blobs/{blob}")
        reader.start()
        assert reader.ended.wait(30)
        asked = [path for method, path, _ in flaky_ccr.requests if method == "GET" and path.endswith(blob)]
    finally:
        flaky_ccr.stop()
    assert reader.status == 200
    assert "sha256:" + hashlib.sha256(reader.received).hexdigest() == blob
    assert len(asked) == 3 and scene.blob_gets() == 0
