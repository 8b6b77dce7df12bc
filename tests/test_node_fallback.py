"""The node fallback's answers, asked directly: digest requests only, mapped back to the upstream, verified."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator

import pytest
import urllib3

from tests.support.local_registry import client as make_client
from tests.support.registry_proxy import RegistryProxy
from tests.support.waiting import wait_until
from webhook.config import parse_config
from webhook.http_service import BoundedServer
from webhook.node.fallback import Fallback
from webhook.node.metrics import NodeMetrics
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.sample_image import PushedImage, push_sample_image

pytestmark = pytest.mark.integration

REPOSITORY = "apps/fallback"
LAYER = 300_000


class Scene:
    def __init__(self, upstream: RegistryServer) -> None:
        self.proxy = RegistryProxy(upstream.host).start()
        self.image: PushedImage = push_sample_image(make_client(upstream.url), REPOSITORY, "v1", [LAYER], seed=2001)
        self.metrics = NodeMetrics()
        self.listen = f"127.0.0.1:{free_port()}"
        config = parse_config(
            {
                "ccr": {"registry": "ccr.ccr-system.svc:5000", "insecure": True, "endpoint": "http://127.0.0.1:1"},
                "upstreams": [
                    {"registry": "upstream.test", "endpoint": self.proxy.url, "insecure": True, "prefix": "up"}
                ],
            },
            environ={},
        )
        self.server: BoundedServer = Fallback(config, self.metrics).serve(self.listen)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self.pool = urllib3.PoolManager(retries=False, timeout=30)

    def ask(self, method: str, path: str, **headers: str) -> urllib3.BaseHTTPResponse:
        return self.pool.request(method, f"http://{self.listen}/v2/up/{REPOSITORY}/{path}", headers=headers)

    def outcome(self, kind: str, outcome: str) -> float:
        sample = f'ccr_node_fallback_requests_total{{kind="{kind}",outcome="{outcome}"}} '
        text = self.metrics.exposition().decode()
        return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample)), 0.0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.proxy.stop()


@pytest.fixture
def scene(upstream: RegistryServer) -> Iterator[Scene]:
    made = Scene(upstream)
    yield made
    made.close()


def test_a_pinned_manifest_and_its_blobs_are_served_from_upstream(scene: Scene) -> None:
    manifest = scene.ask("GET", f"manifests/{scene.image.digest}")
    assert manifest.status == 200
    assert f"sha256:{hashlib.sha256(manifest.data).hexdigest()}" == scene.image.digest
    assert manifest.headers["Docker-Content-Digest"] == scene.image.digest
    layer = json.loads(manifest.data)["layers"][0]["digest"]
    head = scene.ask("HEAD", f"blobs/{layer}")
    assert head.status == 200 and int(head.headers["Content-Length"]) == LAYER
    whole = scene.ask("GET", f"blobs/{layer}")
    assert whole.status == 200 and f"sha256:{hashlib.sha256(whole.data).hexdigest()}" == layer
    resumed = scene.ask("GET", f"blobs/{layer}", Range="bytes=1000-")  # containerd resuming a broken download
    assert resumed.status == 206 and resumed.headers["Content-Range"] == f"bytes 1000-{LAYER - 1}/{LAYER}"
    assert resumed.data == whole.data[1000:]
    # counted once the answer is sent: wait for the server's thread
    wait_until(lambda: scene.outcome("blobs", "served") == 3, 10, "three blob answers counted")
    assert scene.outcome("manifests", "served") == 1


def test_tags_other_names_and_writes_are_never_served(scene: Scene) -> None:
    assert scene.ask("GET", "manifests/v1").status == 404  # a tag: only the CCR names what a tag means
    other = scene.pool.request("GET", f"http://{scene.listen}/v2/elsewhere/app/manifests/{scene.image.digest}")
    assert other.status == 404  # under no configured prefix
    assert scene.ask("PUT", f"manifests/{scene.image.digest}").status == 405
    assert scene.ask("GET", "blobs/sha256:" + "0" * 64).status == 404
    wait_until(lambda: scene.outcome("blobs", "not-found") == 1, 10, "the missing blob counted")
    assert not [request for request in scene.proxy.requests if "/manifests/v1" in request[1]]  # upstream not asked


def test_a_blob_with_other_bytes_than_its_digest_is_cut_before_its_end(scene: Scene) -> None:
    manifest = json.loads(scene.ask("GET", f"manifests/{scene.image.digest}").data)
    layer = manifest["layers"][0]["digest"]
    scene.proxy.corrupt_blobs = True  # same length, last byte changed
    with pytest.raises(urllib3.exceptions.ProtocolError):
        scene.ask("GET", f"blobs/{layer}")  # the answer ends short of its Content-Length
    wait_until(lambda: scene.outcome("blobs", "cut") == 1, 10, "the cut answer counted")
