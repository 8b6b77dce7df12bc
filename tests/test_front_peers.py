"""Several CCR front replicas sharing their misses: one owner per blob digest fetches it from upstream once,
the others stream it from the owner while it arrives, and whatever is committed is served by every one.

Three (then four) real front processes on loopback, each with a real distribution registry of its own,
every registry on ONE S3 bucket (moto on loopback, webhook/testing/s3.py), as production runs them: a blob
one replica's registry commits must be seen through every other registry (the owner commits alone, the
others ask their own registry), and commits of one image by several replicas race across registries.
The scene's own CCR client reads the bucket through yet another registry. The upstream sits behind
tests/support/registry_proxy.py, which counts its blob downloads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import urllib3

from tests.support.waiting import wait_until
from tests.test_front import MiB, Reader, Scene, blob_path, get, metric, scene, sha256  # noqa: F401 - fixture
from webhook import tls
from webhook.config import parse_config
from webhook.front.owners import rank
from webhook.front.peers import Membership
from webhook.registry.client import MANIFEST_MEDIA_TYPES
from webhook.testing.apiserver import LocalAPIServer, Resource
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.s3 import S3Server

pytestmark = pytest.mark.integration
SECRET = "peers-share-this"


@pytest.fixture(scope="module")
def bucket() -> Iterator[S3Server]:
    """The one S3 bucket every CCR registry of this module stores into."""
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def ccr(bucket: S3Server) -> Iterator[RegistryServer]:
    """The registry the scene checks the CCR through: one more on the bucket, none of the replicas' own."""
    with RegistryServer(storage=bucket.storage()) as server:
        yield server


@pytest.fixture(autouse=True)
def _replica_registries() -> Iterator[None]:
    """Every replica's registry stopped after the test (set up before the scene, so torn down after it)."""
    yield
    while Replicas.started:
        Replicas.started.pop().cleanup()


class Replicas:
    """Front replicas of one Scene that know each other by their peer endpoints (a static list), each on a
    registry of its own on the scene's bucket."""

    started: ClassVar[list[RegistryServer]] = []  # stopped after each test, once its fronts are

    def __init__(self, of: Scene, directory: Path, count: int, peer_tls: bool = False, redirect: bool = False) -> None:
        self.scene, self.directory = of, directory
        storage = of.ccr_server.storage
        assert storage is not None, "the scene's CCR is on the bucket"
        # With `redirect`, each registry answers a blob GET with a 307 to a presigned URL on the bucket.
        self.storage = {**storage, "redirect": {"disable": not redirect}}
        self.ccr: dict[str, object] = {"redirectHosts": ["127.0.0.1"]} if redirect else {}
        self.registries: dict[str, RegistryServer] = {}  # each replica's own, on the bucket
        (directory / "secret").write_text(SECRET + "\n")
        self.tls: dict[str, str] = {}
        if peer_tls:
            ca = tls.generate_ca("front peers")
            tls.issue_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(directory / "p.crt", directory / "p.key")
            (directory / "ca.crt").write_bytes(ca.cert_pem)
            self.tls = {
                "peerTlsCert": str(directory / "p.crt"),
                "peerTlsKey": str(directory / "p.key"),
                "peerCaFile": str(directory / "ca.crt"),
            }
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(count)]
        self.fronts: dict[str, LocalFront] = {}

    def start(self, address: str) -> LocalFront:
        """Start (or start again) the replica at `address` with the current membership, on its own registry."""
        if address not in self.registries:
            self.registries[address] = RegistryServer(storage=self.storage)
            Replicas.started.append(self.registries[address])
            self.registries[address].start()
        front = self.scene.front(
            ccr={"endpoint": self.registries[address].url, **self.ccr},
            peers=self.addresses,
            peerListen=address,
            peerAddress=address,
            peerSecret=str(self.directory / "secret"),
            **self.tls,
        )
        self.fronts[address] = front
        return front

    def start_all(self) -> list[LocalFront]:
        return [self.start(address) for address in self.addresses]

    def owner(self, digest: str) -> LocalFront:
        return self.fronts[rank(digest, self.addresses)[0]]

    def total(self, name: str) -> float:
        return sum(metric(front, name) for front in self.fronts.values() if front.process.poll() is None)


def test_concurrent_readers_over_three_replicas_get_verified_bytes_from_one_upstream_fetch_per_blob(
    scene: Scene,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    pushed = scene.push([2 * MiB, 3 * MiB, MiB], seed=201)
    layers = pushed.blobs[:3]
    replicas = Replicas(scene, tmp_path, 3, peer_tls=True)
    fronts = replicas.start_all()
    scene.proxy.blob_gate = threading.Event()
    readers = [Reader(front, blob_path(scene, layer)) for layer in layers for front in fronts for _ in range(2)]
    for reader in readers:
        reader.start()
    wait_until(
        lambda: all(metric(front, "ccr_front_flight_readers") >= 2 * len(layers) for front in fronts),
        what="every reader on a flight, every non-owner following the owner",
    )
    scene.proxy.blob_gate.set()
    for reader in readers:
        reader.finish()
        assert reader.status == 200 and reader.complete
        assert sha256(bytes(reader.received)) == reader.path.rsplit("/", 1)[1]
    assert [scene.blob_gets(layer) for layer in layers] == [1, 1, 1]
    for layer in layers:  # the owner fetched it; the others streamed it from the owner
        assert metric(replicas.owner(layer), "ccr_front_owned_fetches_total") >= 1
    assert replicas.total("ccr_front_owned_fetches_total") == 3
    assert replicas.total("ccr_front_upstream_bytes_total") == 6 * MiB
    assert replicas.total("ccr_front_peer_received_bytes_total") == 2 * 6 * MiB  # two followers per blob
    assert replicas.total('ccr_front_served_bytes_total{source="peer"}') == 2 * 6 * MiB
    wait_until(lambda: all(scene.ccr_has_blob(layer) for layer in layers), what="every blob committed")
    for front in fronts:  # committed: any replica serves it from the CCR, nothing more from upstream
        again = get(front, blob_path(scene, layers[1]))
        assert again.complete and sha256(bytes(again.received)) == layers[1]
    assert [scene.blob_gets(layer) for layer in layers] == [1, 1, 1]


def test_one_image_pulled_through_every_replica_at_once_is_committed_once_whole_on_the_bucket(
    scene: Scene,  # noqa: F811 - the fixture
    tmp_path: Path,
    bucket: S3Server,
) -> None:
    """Each replica commits the image into its own registry at the same moment: the commits race across
    registries on one bucket, and what every registry shows afterwards is the one verified image."""
    pushed = scene.push([MiB, 2 * MiB], seed=250)
    fronts = Replicas(scene, tmp_path, 3).start_all()
    accept = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
    manifests = [Reader(front, f"/v2/{scene.target}/manifests/v1", accept) for front in fronts]
    for reader in manifests:
        reader.start()
    for reader in manifests:
        assert reader.finish().complete and reader.answer["Docker-Content-Digest"] == pushed.digest
    wait_until(lambda: scene.ccr_tag("v1") == pushed.digest, 60, "the image committed and tagged")
    wait_until(lambda: all(scene.ccr_has_blob(blob) for blob in pushed.blobs), 60, "every blob on the bucket")
    assert [scene.blob_gets(blob) for blob in pushed.blobs] == [1] * len(pushed.blobs), "one owner per blob"
    keys = bucket.objects(f"ccr/docker/registry/v2/repositories/{scene.target}/")
    assert any(key.endswith("_manifests/tags/v1/current/link") for key in keys)
    for front in fronts:  # committed: each serves it through its own registry, from the bucket
        held = get(front, f"/v2/{scene.target}/manifests/{pushed.digest}", accept)
        assert held.complete and sha256(bytes(held.received)) == pushed.digest
        for blob in pushed.blobs:
            again = get(front, blob_path(scene, blob))
            assert again.complete and sha256(bytes(again.received)) == blob
    assert [scene.blob_gets(blob) for blob in pushed.blobs] == [1] * len(pushed.blobs)
    assert replicas_served_from_ccr(fronts) > 0


def test_with_storage_redirects_the_front_sends_nodes_to_the_bucket_and_still_commits_what_it_fetched(
    scene: Scene,  # noqa: F811 - the fixture
    tmp_path: Path,
    bucket: S3Server,
) -> None:
    """`storage.redirect` on: the registry answers a held blob with a 307 to a presigned URL. The front passes it
    on unchanged (nodes fetch from the bucket, no byte through the CCR's Pods); its own commits follow such
    redirects through the egress check (`ccr.redirectHosts`), so a cold image still ends up committed."""
    pushed = scene.push([MiB, 2 * MiB], seed=260)
    fronts = Replicas(scene, tmp_path, 2, redirect=True).start_all()
    accept = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
    manifest = get(fronts[0], f"/v2/{scene.target}/manifests/v1", accept)
    assert manifest.complete and manifest.answer["Docker-Content-Digest"] == pushed.digest
    for blob in pushed.blobs:  # cold: streamed from the flight, never redirected
        cold = get(fronts[1], blob_path(scene, blob))
        assert cold.status == 200 and cold.complete and sha256(bytes(cold.received)) == blob
    wait_until(lambda: scene.ccr_tag("v1") == pushed.digest, 60, "the image committed through redirecting registries")
    for front in fronts:
        for blob in pushed.blobs:
            sent = urllib3.request("GET", front.url + blob_path(scene, blob), redirect=False, retries=False, timeout=30)
            location = sent.headers.get("Location", "")
            assert sent.status == 307 and location.startswith(f"{bucket.url}/{bucket.bucket}/"), location[:80]
            fetched = urllib3.request("GET", location, retries=False, timeout=30)  # as containerd follows it
            assert fetched.status == 200 and sha256(fetched.data) == blob
    assert [scene.blob_gets(blob) for blob in pushed.blobs] == [1] * len(pushed.blobs)
    assert sum(metric(front, 'ccr_front_served_bytes_total{source="ccr"}') for front in fronts) < 10_000


def test_the_peer_endpoint_refuses_a_request_without_the_secret(scene: Scene, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    pushed = scene.push([MiB], seed=202)
    replicas = Replicas(scene, tmp_path, 2)
    replicas.start_all()
    url = f"http://{replicas.addresses[0]}/peer/v2/{scene.target}/blobs/{pushed.blobs[0]}"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = urllib3.request("GET", url, headers=headers, retries=False, timeout=10)
        assert refused.status == 401
        assert refused.headers.get("Connection") == "close", "the refusal ends the connection, and says so"
    assert scene.proxy.requests == [], "an unauthenticated peer request never makes the owner fetch"
    allowed = urllib3.request("GET", url, headers={"Authorization": f"Bearer {SECRET}"}, retries=False, timeout=30)
    assert allowed.status == 200 and sha256(allowed.data) == pushed.blobs[0]


def test_the_owner_killed_mid_fetch_its_followers_carry_on_from_the_next_in_rank_with_one_more_fetch(
    scene: Scene,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    pushed = scene.push([4 * MiB], seed=203)
    layer = pushed.blobs[0]
    replicas = Replicas(scene, tmp_path, 3)
    replicas.start_all()
    owner = replicas.owner(layer)
    others = [front for front in replicas.fronts.values() if front is not owner]
    scene.proxy.blob_gate = threading.Event()
    on_owner = [Reader(owner, blob_path(scene, layer)) for _ in range(2)]
    followers = [Reader(front, blob_path(scene, layer)) for front in others for _ in range(2)]
    for reader in on_owner + followers:
        reader.start()
    wait_until(
        lambda: all(len(reader.received) >= MiB for reader in on_owner + followers), what="every reader at the half"
    )
    owner.kill()
    for reader in on_owner:
        assert not reader.finish().complete, "the owner's own readers are cut, never completed with wrong bytes"
    scene.proxy.blob_gate.set()
    for reader in followers:  # the next in rank fetched it again, from where the followers had got to
        assert reader.finish().complete and sha256(bytes(reader.received)) == layer
    assert scene.blob_gets(layer) == 2, "one more upstream fetch, by the new owner, for every follower"
    assert replicas.total("ccr_front_owned_fetches_total") == 1, "counted by the survivor that took over"
    wait_until(lambda: scene.ccr_has_blob(layer), what="the blob committed by the new owner")
    retry = get(others[0], blob_path(scene, layer))  # what the cut node does next
    assert retry.complete and sha256(bytes(retry.received)) == layer
    assert scene.blob_gets(layer) == 2


def test_a_fourth_replica_joining_owns_new_digests_only(scene: Scene, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    first = scene.push([MiB, MiB], seed=204)
    replicas = Replicas(scene, tmp_path, 4)
    joiner = replicas.addresses[3]
    replicas.addresses = replicas.addresses[:3]
    fronts = replicas.start_all()
    for layer in first.blobs[:2]:
        assert get(fronts[0], blob_path(scene, layer)).complete
    wait_until(lambda: all(scene.ccr_has_blob(layer) for layer in first.blobs[:2]), what="the first image's blobs")
    replicas.addresses.append(joiner)  # the others restart with the new list, as a rollout of the config would
    for address in replicas.addresses[:3]:
        replicas.fronts[address].cleanup()
    fronts = [replicas.start(address) for address in replicas.addresses]
    for front in fronts:  # committed blobs stay where they are, whoever ranks first for them now
        for layer in first.blobs[:2]:
            got = get(front, blob_path(scene, layer))
            assert got.complete and sha256(bytes(got.received)) == layer
    assert all(scene.blob_gets(layer) == 1 for layer in first.blobs[:2])
    assert metric(replicas.fronts[joiner], "ccr_front_owned_fetches_total") == 0
    new = None
    for seed in range(205, 215):  # an image some of whose blobs the newcomer owns
        candidate = scene.push([MiB // 2] * 6, seed=seed)
        if any(rank(layer, replicas.addresses)[0] == joiner for layer in candidate.blobs[:6]):
            new = candidate
            break
    assert new is not None
    layers = new.blobs[:6]
    readers = [Reader(front, blob_path(scene, layer)) for layer in layers for front in fronts[:3]]
    for reader in readers:
        reader.start()
    for reader in readers:
        assert reader.finish().complete and sha256(bytes(reader.received)) == reader.path.rsplit("/", 1)[1]
    assert all(scene.blob_gets(layer) == 1 for layer in layers)
    owned = sum(1 for layer in layers if rank(layer, replicas.addresses)[0] == joiner)
    assert metric(replicas.fronts[joiner], "ccr_front_owned_fetches_total") == owned >= 1


def test_a_replica_that_joins_mid_fetch_follows_the_old_owner_and_fetches_only_new_digests(
    scene: Scene,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    replicas = Replicas(scene, tmp_path, 4)
    joiner = replicas.addresses[3]
    old, new = replicas.addresses[:3], replicas.addresses
    pushed = None
    for seed in range(220, 240):  # two layers the newcomer will own: one in flight before it joins, one after
        candidate = scene.push([2 * MiB] * 6, seed=seed)
        if sum(rank(layer, new)[0] == joiner for layer in candidate.blobs[:6]) >= 2:
            pushed = candidate
            break
    assert pushed is not None
    flying, later = [layer for layer in pushed.blobs[:6] if rank(layer, new)[0] == joiner][:2]
    replicas.addresses = old
    fronts = replicas.start_all()
    scene.proxy.blob_gate = threading.Event()
    before = Reader(fronts[0], blob_path(scene, flying))
    before.start()
    wait_until(lambda: len(before.received) >= MiB // 2, what="the old owner's fetch at the held half")
    replicas.addresses = new  # the newcomer knows everyone; the others learn of it later
    newcomer = replicas.start(joiner)
    after = Reader(newcomer, blob_path(scene, flying))
    after.start()
    wait_until(lambda: len(after.received) >= MiB // 2, what="the newcomer following the old owner's fetch")
    scene.proxy.blob_gate.set()
    for reader in (before, after):
        assert reader.finish().complete and sha256(bytes(reader.received)) == flying
    assert scene.blob_gets(flying) == 1, "a digest in flight stays with the replica fetching it"
    assert metric(newcomer, "ccr_front_owned_fetches_total") == 0
    assert metric(newcomer, "ccr_front_peer_received_bytes_total") == 2 * MiB
    fresh = get(newcomer, blob_path(scene, later))
    assert fresh.complete and sha256(bytes(fresh.received)) == later
    assert scene.blob_gets(later) == 1 and metric(newcomer, "ccr_front_owned_fetches_total") == 1


def test_a_corrupt_upstream_blob_cuts_every_reader_on_every_replica_and_is_fetched_once(
    scene: Scene,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    pushed = scene.push([2 * MiB], seed=241)
    layer = pushed.blobs[0]
    scene.proxy.corrupt_blobs = True
    scene.proxy.blob_gate = threading.Event()
    replicas = Replicas(scene, tmp_path, 3)
    readers = [Reader(front, blob_path(scene, layer)) for front in replicas.start_all() for _ in range(2)]
    for reader in readers:
        reader.start()
    wait_until(lambda: all(len(reader.received) >= MiB // 2 for reader in readers), what="every reader at the half")
    scene.proxy.blob_gate.set()
    for reader in readers:
        assert not reader.finish().complete, "a reader must never get a whole blob with wrong bytes"
    assert scene.blob_gets(layer) == 1, "the owner is still up: its followers fail with it, nobody fetches again"
    assert not scene.ccr_has_blob(layer)


def replicas_served_from_ccr(fronts: list[LocalFront]) -> float:
    """Bytes the replicas sent from their own CCR registry."""
    return sum(metric(front, 'ccr_front_served_bytes_total{source="ccr"}') for front in fronts)


def endpoint_slice(name: str, addresses: list[tuple[str, bool]], port: int = 5003) -> dict[str, object]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "ccr-system", "labels": {"kubernetes.io/service-name": "ccr-peers"}},
        "addressType": "IPv4",
        "ports": [{"name": "peer", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in addresses],
    }


def test_membership_is_the_ready_addresses_of_the_headless_service() -> None:
    slices = Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices")
    front = {"peerService": "ccr-peers", "peerNamespace": "ccr-system", "peerAddress": "10.0.0.1", "peerSecret": "/s"}
    config = parse_config({"ccr": {"registry": "ccr.test"}, "front": front})
    with LocalAPIServer(resources=(slices,)) as server:
        server.create(endpoint_slice("ccr-peers-a", [("10.0.0.1", True), ("10.0.0.2", True), ("10.0.0.3", False)]))
        server.create(
            {**endpoint_slice("other", [("10.0.0.9", True)]), "metadata": {"name": "other", "namespace": "ccr-system"}}
        )
        membership = Membership(config.front, server.api_client())
        assert membership.members() == {"10.0.0.1:5003"}, "before the first read: this replica alone"
        membership.refresh()
        assert membership.members() == {"10.0.0.1:5003", "10.0.0.2:5003"}, "ready members of this Service only"
        server.create(endpoint_slice("ccr-peers-b", [("10.0.0.4", True)]))
        membership.refresh()
        assert membership.members() == {"10.0.0.1:5003", "10.0.0.2:5003", "10.0.0.4:5003"}
        server.fail_next(503, "GET", "endpointslices")
        membership.refresh()
        assert len(membership.members()) == 3, "an API error keeps the last membership"
