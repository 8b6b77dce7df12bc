"""Real containerd daemons as nodes, pulling with `ctr` configured by nothing but what the node agent wrote.

Each test starts its own daemon (CRI plugin off, own root, state and unix socket) and pulls a pinned image
in the CCR's form, `ccr.ccr-system.svc:5000/up/<repository>@sha256:…`, with `--hosts-dir` set to the agent's
directory (containerd's `config_path`). The name never resolves: containerd reaches the front at the address
the agent wrote, over TLS verified by the CA the agent wrote, and falls back to the agent's loopback endpoint
when the front does not answer.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

from tests.support.local_registry import client as make_client
from tests.support.registry_proxy import RegistryProxy
from tests.support.waiting import wait_until
from webhook import tls
from webhook.config import parse_config
from webhook.node.agent import NodeAgent
from webhook.node.fallback import Fallback
from webhook.node.hosts import CA_FILE, HOSTS_FILE
from webhook.node.metrics import NodeMetrics
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.containerd import ContainerdNode, Pulled, containerd_unavailable
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.sample_image import PushedImage, push_sample_image

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(containerd_unavailable() is not None, reason=str(containerd_unavailable())),
]

REGISTRY = "ccr.ccr-system.svc:5000"
PREFIX = "up"
LAYERS = [700_000, 400_000, 300_000, 200_000]


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if wanted else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


class Certificates:
    """The CCR's CA and the front's serving certificate, as files the front and the agent read."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_file, self.cert_file, self.key_file = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
        self.issue(tls.generate_ca("ccr CA"), ip_san=True)

    def issue(self, ca: tls.KeyPair, ip_san: bool) -> None:
        """A new front certificate from `ca` (with or without the IP nodes dial), and `ca` as the CCR's CA."""
        self.ca = ca
        pair = tls.issue_serving_cert(ca, ["ccr.ccr-system.svc", "ccr"], ["127.0.0.1"] if ip_san else [])
        pair.write(self.cert_file, self.key_file)
        self.ca_file.write_bytes(ca.cert_pem)


class NodeScene:
    """Upstream (behind a proxy that can corrupt blobs), the CCR registry, the front over TLS, the node agent
    with its fallback, and one containerd node."""

    def __init__(self, upstream: RegistryServer, ccr: RegistryServer, workdir: Path, repository: str) -> None:
        self.upstream, self.ccr, self.repository = upstream, ccr, repository
        self.proxy = RegistryProxy(upstream.host).start()
        self.certs = Certificates(workdir)
        self.hosts_dir = workdir / "certs.d"
        self.hosts_dir.mkdir()
        self.front: LocalFront | None = None
        self.front_port = free_port()
        self.metrics = NodeMetrics()
        self.settings = self._settings()
        config = parse_config(self.settings, environ={})
        self.agent = NodeAgent(config, self.metrics, None)
        self.fallback = Fallback(config, self.metrics).serve(config.nodes.fallback_listen or "")
        threading.Thread(target=self.fallback.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self.node = ContainerdNode(repository.replace("/", "-")[:20]).start()

    def _settings(self) -> dict[str, Any]:
        return {
            "ccr": {"registry": REGISTRY, "caFile": str(self.certs.ca_file)},
            "upstreams": [
                {"registry": "upstream.test", "endpoint": self.proxy.url, "insecure": True, "prefix": PREFIX}
            ],
            "resolver": {"readTimeoutSeconds": 30},
            "nodes": {
                "configPath": str(self.hosts_dir),
                "hostDir": str(self.hosts_dir),
                "containerdConfig": "",
                "frontAddress": f"127.0.0.1:{self.front_port}",
                "fallbackListen": f"127.0.0.1:{free_port()}",
                "caOverlapSeconds": 3600,
            },
        }

    def start_front(self) -> LocalFront:
        """The front on its fixed port, TLS from the certificate files, the CCR registry behind it."""
        front = LocalFront(
            {
                "ccr": {"registry": REGISTRY, "endpoint": self.ccr.url, "insecure": True},
                "upstreams": self.settings["upstreams"],
                "resolver": {"readTimeoutSeconds": 30},
                "front": {"tlsCert": str(self.certs.cert_file), "tlsKey": str(self.certs.key_file)},
            }
        )
        self.front = _on_port(front, self.front_port).start()
        return self.front

    def push(self, seed: int, repository: str | None = None) -> PushedImage:
        return push_sample_image(
            make_client(self.upstream.url), repository or self.repository, "v1", LAYERS, seed, tar_layers=True
        )

    def reference(self, image: PushedImage) -> str:
        return f"{REGISTRY}/{PREFIX}/{image.repository}@{image.digest}"

    def pull(self, image: PushedImage) -> None:
        pulled = self.node.pull(self.reference(image), self.hosts_dir)
        assert pulled.ok, f"ctr pull failed:\n{pulled.output[-2000:]}\ncontainerd:\n{self.node.log()}"

    def front_metrics(self) -> str:
        """The front's exposition, over its TLS as a node reaches it."""
        pool = urllib3.PoolManager(ca_certs=str(self.certs.ca_file))
        return pool.request("GET", f"https://127.0.0.1:{self.front_port}/metrics", timeout=10).data.decode()

    def fallback_served(self) -> float:
        text = self.metrics.exposition().decode()
        return sum(
            _metric(text, "ccr_node_fallback_requests_total", kind=kind, outcome="served")
            for kind in ("manifests", "blobs")
        )

    def close(self) -> None:
        self.node.cleanup()
        self.fallback.shutdown()
        self.fallback.server_close()
        if self.front is not None:
            self.front.cleanup()
        self.proxy.stop()


def _on_port(front: LocalFront, port: int) -> LocalFront:
    """`front` set to listen on `port` (kept across restarts, as a Service's address is)."""
    settings = yaml.safe_load(front.config_path.read_text())
    settings["front"]["listen"] = f"127.0.0.1:{port}"
    front.config_path.write_text(yaml.safe_dump(settings))
    front.port = port
    return front


@pytest.fixture
def scene(
    upstream: RegistryServer, empty_ccr: RegistryServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[NodeScene]:
    name = "apps/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    made = NodeScene(upstream, empty_ccr, tmp_path, name)
    try:
        yield made
    finally:
        made.close()


def test_a_cold_image_is_pulled_through_the_front_then_a_held_one_from_the_ccr(scene: NodeScene) -> None:
    scene.start_front()
    status = scene.agent.sync()
    assert status.ready and status.reason == "CCRNodeReady", status
    hosts = (scene.hosts_dir / REGISTRY / HOSTS_FILE).read_text()
    assert f'[host."https://127.0.0.1:{scene.front_port}"]' in hosts and f"{REGISTRY}/{CA_FILE}" in hosts
    image = scene.push(seed=1601)

    scene.pull(image)  # cold: the front fetches it from upstream while it streams it to the node
    cold = scene.front_metrics()
    assert _metric(cold, "ccr_front_upstream_bytes_total") >= sum(LAYERS)
    assert scene.fallback_served() == 0

    wait_until(
        lambda: make_client(scene.ccr.url).has_manifest(f"{PREFIX}/{image.repository}", image.digest), 60, "commit"
    )
    scene.node.forget()
    scene.pull(image)  # held: straight from the CCR registry, nothing more from upstream
    held = scene.front_metrics()
    assert _metric(held, "ccr_front_upstream_bytes_total") == _metric(cold, "ccr_front_upstream_bytes_total")
    assert _metric(held, "ccr_front_served_bytes_total", source="ccr") >= sum(LAYERS)
    assert scene.fallback_served() == 0


def test_a_certificate_without_the_dialed_ip_is_caught_before_any_pull(scene: NodeScene) -> None:
    scene.certs.issue(scene.certs.ca, ip_san=False)  # DNS names only, as the old production script issued
    scene.start_front()
    with LocalAPIServer() as cluster:
        agent = NodeAgent(
            parse_config({**scene.settings, "nodes": {**scene.settings["nodes"], "nodeName": "node-1"}}, environ={}),
            scene.metrics,
            cluster.api_client(),
        )
        status = agent.sync()
        assert not status.ready and status.reason == "CCRCertificateMismatch", status
        assert "127.0.0.1" in status.message and "IP" in status.message
        events = [event for event in cluster.objects("Event") if event["reason"] == "CCRCertificateMismatch"]
        assert events and events[0]["involvedObject"] == {
            "apiVersion": "v1",
            "kind": "Node",
            "name": "node-1",
            "uid": "node-1",
        }
        assert _metric(scene.metrics.exposition().decode(), "ccr_node_agent_ready") == 0

        scene.certs.issue(scene.certs.ca, ip_san=True)  # the fixed certificate; the front reloads it
        wait_until(lambda: agent.sync().ready, 30, "the agent to see the new certificate")
        assert agent.status.reason == "CCRNodeReady"
        assert any(event["reason"] == "CCRNodeReady" for event in cluster.objects("Event"))


def test_a_rotated_ca_is_trusted_beside_the_old_one_and_pulls_keep_going_through_the_front(scene: NodeScene) -> None:
    front = scene.start_front()
    assert scene.agent.sync().ready
    old_ca = scene.certs.ca
    images = [scene.push(seed=1700 + index, repository=f"{scene.repository}-{index}") for index in range(6)]
    scene.pull(images[0])
    results: list[Pulled] = []
    rotated = threading.Event()

    def pull_meanwhile() -> None:  # one cold pull after another while the CA and the certificate change
        for image in images[1:]:
            scene.node.forget()
            results.append(scene.node.pull(scene.reference(image), scene.hosts_dir))
            if rotated.is_set():
                break

    puller = threading.Thread(target=pull_meanwhile, daemon=True)
    puller.start()
    new_ca = tls.generate_ca("ccr CA 2")
    scene.certs.ca_file.write_bytes(new_ca.cert_pem)  # the CA first, as the Secret changes
    assert scene.agent.sync().ready  # the old certificate still verifies: both CAs are trusted
    bundle = (scene.hosts_dir / REGISTRY / CA_FILE).read_bytes()
    assert old_ca.cert_pem.strip() in bundle and new_ca.cert_pem.strip() in bundle
    scene.certs.issue(new_ca, ip_san=True)  # then the front's certificate, reloaded without a restart
    wait_until(lambda: scene.agent.sync().ready and _serves_new(front, new_ca), 30, "the front to serve the new cert")
    rotated.set()
    puller.join(300)
    assert not puller.is_alive()
    assert results and all(pulled.ok for pulled in results), [pulled.output[-500:] for pulled in results]
    scene.node.forget()
    scene.pull(images[-1])  # after the rotation
    assert scene.fallback_served() == 0  # every pull went through the front


def _serves_new(front: LocalFront, ca: tls.KeyPair) -> bool:
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    try:
        with (
            socket.create_connection(("127.0.0.1", front.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def test_with_every_ccr_pod_down_a_pinned_image_pulls_from_upstream_verified_and_then_through_the_ccr_again(
    scene: NodeScene,
) -> None:
    front = scene.start_front()
    assert scene.agent.sync().ready
    image = scene.push(seed=1801)
    tampered = scene.push(seed=1802, repository=f"{scene.repository}-tampered")
    front.cleanup()  # every CCR Pod gone: the front and the registry behind it
    scene.front = None
    scene.ccr.stop()
    status = scene.agent.sync()
    assert status.ready and status.reason == "CCRFrontUnreachable", status

    scene.pull(image)  # from upstream through the node-local fallback
    wait_until(lambda: scene.fallback_served() >= 1 + len(LAYERS), 10, "the fallback's answers counted")

    scene.proxy.corrupt_blobs = True  # an upstream serving other bytes than the digest names
    failed = scene.node.pull(scene.reference(tampered), scene.hosts_dir, timeout=60)
    assert not failed.ok
    wait_until(
        lambda: _metric(
            scene.metrics.exposition().decode(), "ccr_node_fallback_requests_total", kind="blobs", outcome="cut"
        ),
        10,
        "the fallback to cut the tampered blob",
    )
    scene.proxy.corrupt_blobs = False

    scene.ccr.start()  # the CCR is back: its registry (same storage, same port), then its front
    scene.start_front()
    assert scene.agent.sync().reason == "CCRNodeReady"
    served_while_down = scene.fallback_served()  # read after the restarts: every answer of the outage counted
    scene.node.forget()
    scene.pull(tampered)  # a cold image, now through the front again
    assert scene.fallback_served() == served_while_down
    assert _metric(scene.front_metrics(), "ccr_front_upstream_bytes_total") >= sum(LAYERS)


def test_a_front_whose_registry_is_down_answers_5xx_and_containerd_moves_on_to_the_fallback(scene: NodeScene) -> None:
    scene.start_front()
    assert scene.agent.sync().ready
    image = scene.push(seed=1901)
    scene.ccr.stop()  # the front is up but cannot reach its registry: it answers 503 for content
    scene.pull(image)
    wait_until(lambda: scene.fallback_served() >= 1 + len(LAYERS), 10, "the fallback's answers counted")
    scene.ccr.start()
