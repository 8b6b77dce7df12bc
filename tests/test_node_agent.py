"""The node agent against the in-memory API server and as the `ccr-webhook node-agent` process."""

from __future__ import annotations

import json
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.support.waiting import wait_until
from webhook import tls
from webhook.config import parse_config
from webhook.node.agent import NodeAgent
from webhook.node.hosts import CA_FILE, HOSTS_FILE
from webhook.node.metrics import NodeMetrics
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.processes import LocalCommand, RegistryServer, free_port

pytestmark = pytest.mark.integration


def _settings(hosts_dir: Path, registry: str, **node_agent: Any) -> dict[str, Any]:
    return {
        "ccr": {"registry": registry, "endpoint": "http://127.0.0.1:1", "insecure": True},
        "nodes": {
            "configPath": "/etc/containerd/certs.d",
            "hostDir": str(hosts_dir),
            "containerdConfig": "",
            "fallbackListen": "",
            "nodeName": "node-1",
            **node_agent,
        },
    }


def _service(cluster_ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ccr", "namespace": "ccr-system"},
        "spec": {"clusterIP": cluster_ip, "ports": [{"name": "front", "port": 5000}]},
    }


def test_the_front_is_dialed_at_the_services_cluster_ip(tmp_path: Path, upstream: RegistryServer) -> None:
    registry = f"ccr.ccr-system.svc:{upstream.port}"  # the Service's port; a registry answers there in this test
    with LocalAPIServer() as cluster:
        cluster.create(_service("127.0.0.1"))
        agent = NodeAgent(parse_config(_settings(tmp_path, registry), environ={}), NodeMetrics(), cluster.api_client())
        status = agent.sync()
        assert status.ready and status.reason == "CCRNodeReady", status
        hosts = tomllib.loads((tmp_path / registry / HOSTS_FILE).read_text())
        assert list(hosts["host"]) == [f"http://127.0.0.1:{upstream.port}"]

        cluster.stop()  # the API server gone: the address last read stays
        assert agent.sync().ready


def test_a_service_without_a_cluster_ip_is_not_ready(tmp_path: Path) -> None:
    with LocalAPIServer() as cluster:
        cluster.create(_service("None"))
        settings = _settings(tmp_path, "ccr.ccr-system.svc:5000")
        agent = NodeAgent(parse_config(settings, environ={}), NodeMetrics(), cluster.api_client())
        status = agent.sync()
        assert not status.ready and status.reason == "CCRServiceUnknown"
        assert not (tmp_path / "ccr.ccr-system.svc:5000").exists()


@pytest.mark.parametrize(
    "containerd_config",
    [
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n',
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/docker/certs.d"\n',
        None,  # no config file at all: containerd's defaults set no config_path
    ],
)
def test_a_node_whose_containerd_has_no_config_path_gets_nothing_written_and_an_event(
    tmp_path: Path, containerd_config: str | None
) -> None:
    config_file = tmp_path / "config.toml"
    if containerd_config is not None:
        config_file.write_text(containerd_config)
    hosts_dir = tmp_path / "certs.d"
    hosts_dir.mkdir()
    settings = _settings(hosts_dir, "ccr.ccr-system.svc:5000", containerdConfig=str(config_file))
    with LocalAPIServer() as cluster:
        cluster.create(_service("127.0.0.1"))
        agent = NodeAgent(parse_config(settings, environ={}), NodeMetrics(), cluster.api_client())
        status = agent.sync()
        assert not status.ready and status.reason == "CCRNoConfigPath"
        assert "/etc/containerd/certs.d" in status.message and "nothing written" in status.message
        assert list(hosts_dir.iterdir()) == []
        (event,) = [event for event in cluster.objects("Event") if event["reason"] == "CCRNoConfigPath"]
        assert event["type"] == "Warning" and event["involvedObject"]["name"] == "node-1"
        agent.sync()  # the same state again: no second Event
        assert len([event for event in cluster.objects("Event") if event["reason"] == "CCRNoConfigPath"]) == 1


def test_a_stopping_agent_keeps_its_files_for_a_rollout_and_removes_them_when_its_daemonset_is_deleted(
    tmp_path: Path, upstream: RegistryServer
) -> None:
    registry = "ccr.ccr-system.svc:5000"
    daemon_set = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "ccr-node-agent", "namespace": "ccr-nodes"},
        "spec": {},
    }
    with LocalAPIServer() as cluster:
        cluster.create(daemon_set)
        settings = _settings(tmp_path, registry, frontAddress=upstream.host)
        agent = NodeAgent(parse_config(settings, environ={}), NodeMetrics(), cluster.api_client())
        assert agent.sync().ready
        stopped = threading.Event()
        stopped.set()
        agent.run(stopped)  # a rollout: the next agent takes over the same files
        assert (tmp_path / registry / HOSTS_FILE).exists()

        cluster.delete("DaemonSet", "ccr-node-agent", "ccr-nodes")
        agent.run(stopped)  # uninstalled
        assert not (tmp_path / registry).exists()


def test_a_ca_changed_in_its_configmap_reaches_the_node_within_seconds_not_at_the_next_interval(
    tmp_path: Path, upstream: RegistryServer
) -> None:
    registry = "ccr.ccr-system.svc:5000"
    first, second = tls.generate_ca("ccr CA 1").cert_pem.decode(), tls.generate_ca("ccr CA 2").cert_pem.decode()
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ccr-ca", "namespace": "ccr-nodes"},
        "data": {"ca.crt": first},
    }
    settings = {
        **_settings(tmp_path, registry, frontAddress=upstream.host, caConfigMap="ccr-ca", intervalSeconds=300),
        "ccr": {"registry": registry, "endpoint": "https://127.0.0.1:1"},  # TLS: the CA is written
    }
    ca_file = tmp_path / registry / CA_FILE
    with LocalAPIServer() as cluster:
        cluster.create(configmap)
        agent = NodeAgent(parse_config(settings, environ={}), NodeMetrics(), cluster.api_client())
        stop = threading.Event()
        running = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        running.start()
        try:
            wait_until(lambda: ca_file.exists() and first.strip() in ca_file.read_text(), 20, "the first CA")
            cluster.update({**configmap, "data": {"ca.crt": second}})
            wait_until(lambda: second.strip() in ca_file.read_text(), 20, "the rotated CA, long before 300 s")
            assert first.strip() in ca_file.read_text()  # trusted beside it for the overlap
        finally:
            stop.set()
            running.join(10)
        assert not running.is_alive()


def test_the_command_writes_its_files_answers_ready_and_removes_them_on_sigterm(
    tmp_path: Path, upstream: RegistryServer
) -> None:
    hosts_dir = tmp_path / "certs.d"
    hosts_dir.mkdir()
    listen = f"127.0.0.1:{free_port()}"
    registry = "ccr.ccr-system.svc:5000"
    settings = _settings(
        hosts_dir,
        registry,
        frontAddress=upstream.host,
        listen=listen,
        fallbackListen=f"127.0.0.1:{free_port()}",
        nodeName="",
        intervalSeconds=0.2,
    )
    agent = LocalCommand("node-agent", settings, prefix="ccr-node-agent-")
    try:
        agent.launch()
        wait_until(lambda: (hosts_dir / registry / HOSTS_FILE).exists(), 30, "hosts.toml")
        agent.wait_listening(int(listen.rpartition(":")[2]), timeout=30)
        ready = urllib3.request("GET", f"http://{listen}/readyz", timeout=5)
        assert ready.status == 200 and json.loads(ready.data)["reason"] == "CCRNodeReady"
        metrics = urllib3.request("GET", f"http://{listen}/metrics", timeout=5).data.decode()
        assert "ccr_node_agent_ready 1.0" in metrics
        assert agent.terminate() == 0
        assert list(hosts_dir.iterdir()) == []  # what it wrote is gone, its directory too
    finally:
        agent.cleanup()
