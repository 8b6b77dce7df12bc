"""The CCR front's ports against a flood from one address: silent connections and request heads trickled a byte
at a time (over TLS too), as many as a Pod may open. A pull and the kubelet's `/healthz` from another address
are served meanwhile, the flood's connections are cut at the head deadline, and the address's cap refuses
the rest at once; the peer port holds the same. Real front processes; the flood comes from 127.0.0.2.
"""

from __future__ import annotations

import http.client
import ssl
import time
from pathlib import Path

import pytest

from tests.support.waiting import deadline_ceiling, wait_until
from tests.test_front import MiB, Scene, blob_path, get, scene, sha256  # noqa: F401 - the fixture
from tests.test_front_peers import SECRET, Replicas, _replica_registries, bucket, ccr  # noqa: F401 - fixtures: the CCR on a bucket, as the replicas need
from webhook import tls
from webhook.testing.front_process import LocalFront
from webhook.testing.slow_clients import SlowClients

pytestmark = pytest.mark.integration
FLOODER = "127.0.0.2"
HEAD_SECONDS = 2
PER_ADDRESS = 40
FLOOD = 150  # of each kind: idle, and trickled heads


def fetch(front_port: int, path: str, context: ssl.SSLContext | None = None, **headers: str) -> tuple[int, bytes]:
    """GET `path` from 127.0.0.1 (over TLS with `context`): the status and the whole body, within 10 s."""
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", front_port, timeout=10)
    else:
        connection = http.client.HTTPSConnection("localhost", front_port, timeout=10, context=context)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def assert_cut_at_the_deadline(flood: SlowClients) -> None:
    """Connections the cap let in lived until the head deadline (not per byte, not forever); the rest were
    refused at once."""
    wait_until(
        lambda: sum(lived > 1 for lived in flood.lifetimes) >= PER_ADDRESS,
        timeout=deadline_ceiling(HEAD_SECONDS) + 5,
        what="the admitted flood connections cut",
    )
    admitted = [lived for lived in flood.lifetimes if lived > 1]
    assert max(admitted) <= deadline_ceiling(HEAD_SECONDS), sorted(admitted)[-5:]
    refused = flood.refused + sum(lived < 1 for lived in flood.lifetimes)
    assert refused >= FLOOD, "the address's cap refused the rest at once"


@pytest.mark.parametrize("over_tls", [False, True], ids=["plain", "tls"])
def test_a_flood_from_one_address_stops_neither_pulls_nor_the_probe(
    scene: Scene,  # noqa: F811 - the fixture
    tmp_path: Path,
    over_tls: bool,
) -> None:
    pushed = scene.push([2 * MiB], seed=191)
    layer = pushed.blobs[0]
    context, settings = None, {}
    if over_tls:
        ca = tls.generate_ca("front")
        tls.issue_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(tmp_path / "f.crt", tmp_path / "f.key")
        context = ssl.create_default_context(cadata=ca.cert_pem.decode())
        settings = {"tlsCert": str(tmp_path / "f.crt"), "tlsKey": str(tmp_path / "f.key")}
    front = scene.front(headTimeoutSeconds=HEAD_SECONDS, maxConnectionsPerAddress=PER_ADDRESS, **settings)
    status, body = fetch(front.port, blob_path(scene, layer), context)  # cold: fetched, then committed
    assert status == 200 and sha256(body) == layer
    wait_until(lambda: scene.ccr_has_blob(layer), what="the blob committed to the CCR")
    flood = SlowClients(
        "127.0.0.1", front.port, 0, 0, idle=FLOOD, heads=FLOOD, heads_tls=over_tls, source=FLOODER, interval=0.5
    )
    with flood:
        for _ in range(4):
            started = time.monotonic()
            status, body = fetch(front.port, blob_path(scene, layer), context)
            assert status == 200 and sha256(body) == layer
            assert time.monotonic() - started < 5, "a held 2 MiB blob on loopback takes milliseconds"
            assert fetch(front.port, "/healthz", context) == (200, b"ok\n")
        assert_cut_at_the_deadline(flood)
    assert scene.blob_gets(layer) == 1


def test_the_peer_port_holds_against_a_flood_from_one_address(
    scene: Scene,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    pushed = scene.push([MiB], seed=193)
    layer = pushed.blobs[0]
    replicas = Replicas(scene, tmp_path, 1)
    (address,) = replicas.addresses
    front: LocalFront = scene.front(
        peers=replicas.addresses,
        peerListen=address,
        peerAddress=address,
        peerSecret=str(tmp_path / "secret"),
        headTimeoutSeconds=HEAD_SECONDS,
        maxConnectionsPerAddress=PER_ADDRESS,
    )
    assert get(front, blob_path(scene, layer)).status == 200
    port = int(address.rpartition(":")[2])
    secret = {"Authorization": f"Bearer {SECRET}"}
    with SlowClients("127.0.0.1", port, 0, 0, idle=FLOOD, heads=FLOOD, source=FLOODER, interval=0.5) as flood:
        for _ in range(3):
            assert fetch(port, "/healthz", **secret) == (200, b"ok\n")
            status, body = fetch(port, f"/peer/v2/{scene.target}/blobs/{layer}", **secret)
            assert status == 200 and sha256(body) == layer
        assert_cut_at_the_deadline(flood)
