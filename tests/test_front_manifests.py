"""One upstream request per cold manifest, however many clients ask at once (GET and HEAD): an in-process Front
between real distribution registries, the upstream behind a counting proxy that holds manifest requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.counted_future import CountedFuture
from tests.support.front_requests import ask, request_bytes
from tests.support.local_registry import client as make_client
from tests.support.registry_proxy import RegistryProxy
from tests.support.waiting import wait_until
from webhook.config import parse_config
from webhook.front import upstream as upstream_module
from webhook.front.app import Front
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration

CLIENTS = 8
ACCEPT = "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json\r\n"


@pytest.fixture
def proxy(upstream: RegistryServer) -> Iterator[RegistryProxy]:
    started = RegistryProxy(upstream.host).start()
    yield started
    if started.manifest_gate is not None:
        started.manifest_gate.set()
    started.stop()


def test_clients_asking_for_a_cold_manifest_at_once_share_one_upstream_request(
    proxy: RegistryProxy, upstream: RegistryServer, ccr: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed = push_sample_image(make_client(upstream.url), "apps/shared-manifest", "v1", [4096], seed=501)
    config = parse_config(
        {
            "ccr": {"registry": "ccr.test", "endpoint": ccr.url, "insecure": True},
            "upstreams": [{"registry": "upstream.test", "endpoint": proxy.url, "insecure": True, "prefix": "up"}],
            "front": {"spoolDir": str(tmp_path / "spool")},
        }
    )
    front = Front(config, max_connections=CLIENTS)
    commits: list[str] = []
    monkeypatch.setattr(front.commits, "start", lambda origin, manifest, tag: commits.append(manifest.digest))
    monkeypatch.setattr(upstream_module, "Future", CountedFuture)
    CountedFuture.waiting = 0
    proxy.manifest_gate = threading.Event()  # the first manifest request upstream waits here

    answers: list[tuple[int, dict[str, str], bytes]] = []
    path = "/v2/up/apps/shared-manifest/manifests/v1"

    def client(method: str) -> None:
        answers.append(ask(front, request_bytes(path, method, ACCEPT)))

    clients = [threading.Thread(target=client, args=("GET" if at % 2 else "HEAD",)) for at in range(CLIENTS)]
    for thread in clients:
        thread.start()
    wait_until(lambda: CountedFuture.waiting == CLIENTS - 1, what="every other client waiting on the first")
    proxy.manifest_gate.set()
    for thread in clients:
        thread.join(60)

    assert [status for status, _, _ in answers] == [200] * CLIENTS
    assert {headers["Docker-Content-Digest"] for _, headers, _ in answers} == {pushed.digest}
    manifest_requests = [(method, path) for method, path, _ in proxy.requests if "/manifests/" in path]
    assert manifest_requests == [
        ("HEAD", "/v2/apps/shared-manifest/manifests/v1"),  # the tag resolved once
        ("GET", f"/v2/apps/shared-manifest/manifests/{pushed.digest}"),  # then fetched once, by its digest
    ]
    assert set(commits) == {pushed.digest}
