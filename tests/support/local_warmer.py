"""The warmer's test scene: an upstream (behind a recording, throttling proxy) with one image, a CCR, the fake
API server with a namespace labelled enforce; and `ccr-webhook warmer` as a subprocess, so a test can SIGKILL
it mid-copy or run two and watch the Lease change hands.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml

import webhook
from tests.support.fake_apiserver import FakeAPIServer
from tests.support.registry_proxy import RegistryProxy
from webhook.config import parse_config
from webhook.local_servers import RegistryServer, free_port, stop, wait_for_port
from webhook.registry import RegistryClient
from webhook.sample_image import PushedImage, push_sample_image
from webhook.warmer.service import Warmer

_SOURCE_ROOT = str(Path(webhook.__file__).resolve().parents[1])
NAMESPACE = "team"  # labelled enforce in the tests' API server
POLICY_LABEL = "ccr-webhook/policy"


def mirror_settings(upstream_host: str, upstream_url: str, ccr: RegistryServer, **sections: dict[str, Any]) -> dict[str, Any]:
    """A configuration mirroring one plain-HTTP upstream under the prefix `mirror` into `ccr`, plus `sections`."""
    settings: dict[str, Any] = {
        "ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True},
        "upstreams": [{"registry": upstream_host, "endpoint": upstream_url, "insecure": True, "prefix": "mirror"}],
        "resolver": {"negativeCacheSeconds": 0.2, "ccrCacheSeconds": 0.2},
    }
    for name, section in sections.items():
        settings[name] = {**settings.get(name, {}), **section}
    return settings


def labelled_namespace(name: str = NAMESPACE, policy: str = "enforce") -> dict[str, Any]:
    """A Namespace object labelled for ccr-webhook."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {POLICY_LABEL: policy}}}


def pod(name: str, *images: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """A Pod object running `images`."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": f"c{index}", "image": image} for index, image in enumerate(images)]}}


@dataclass
class Scene:
    """The servers of a warm test and the image pushed upstream (team/app:1.0, three layers)."""

    upstream: RegistryServer
    proxy: RegistryProxy
    ccr: RegistryServer
    api: FakeAPIServer
    image: PushedImage
    kubeconfig: Path
    warmers: list[Warmer] = field(default_factory=list)

    @property
    def upstream_host(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    @property
    def tagged(self) -> str:
        return f"{self.upstream_host}/team/app:1.0"

    @property
    def source(self) -> str:
        return f"{self.tagged}@{self.image.digest}"

    @property
    def target(self) -> str:
        return f"{self.ccr.host}/mirror/team/app:1.0@{self.image.digest}"

    def settings(self, **sections: dict[str, Any]) -> dict[str, Any]:
        """The configuration for this scene (short Lease and backoff), with `sections` merged in."""
        fast = {"leaseSeconds": 2, "backoffSeconds": 0.2, "backoffMaxSeconds": 1}
        return mirror_settings(self.upstream_host, self.proxy.url, self.ccr,
                               **{**sections, "warmer": {**fast, **sections.get("warmer", {})}})

    def start_warmer(self, **sections: dict[str, Any]) -> Warmer:
        """An in-process warmer on free ports, stopped when the scene ends."""
        settings = self.settings(**sections)
        settings["warmer"].update(listen="127.0.0.1:0", metricsListen="127.0.0.1:0")
        warmer = Warmer(parse_config(settings), self.api.api_client(), identity=f"test-{len(self.warmers)}")
        self.warmers.append(warmer.start())
        return warmer

    def ccr_client(self) -> RegistryClient:
        return RegistryClient(self.ccr.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=4)

    def in_ccr(self) -> bool:
        return self.ccr_client().has_manifest("mirror/team/app", self.image.digest)

    def blob_downloads(self) -> Counter:
        """How often each blob was downloaded from the upstream."""
        return Counter(path for method, path, _ in self.proxy.requests if method == "GET" and "/blobs/sha256:" in path)


@contextlib.contextmanager
def warm_scene(workdir: Path) -> Iterator[Scene]:
    """A running Scene, torn down (warmers first) on exit."""
    with RegistryServer() as upstream, RegistryServer() as ccr, FakeAPIServer() as api:
        client = RegistryClient(upstream.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=4)
        image = push_sample_image(client, "team/app", "1.0", layer_sizes=[200_000, 100_000, 50_000], seed=3)
        proxy = RegistryProxy(upstream.host).start()
        api.create(labelled_namespace())
        scene = Scene(upstream, proxy, ccr, api, image, api.write_kubeconfig(workdir / "kubeconfig"))
        try:
            yield scene
        finally:
            for warmer in scene.warmers:
                warmer.stop()
            proxy.stop()


class LocalWarmer:
    """One `ccr-webhook warmer` process with its own hint and metrics ports."""

    def __init__(self, settings: dict[str, Any], kubeconfig: Path, identity: str) -> None:
        self.hint_port, self.metrics_port = free_port(), free_port()
        self.identity = identity
        self.kubeconfig = kubeconfig
        self.workdir = Path(tempfile.mkdtemp(prefix="ccr-warmer-"))
        self.log_path = self.workdir / "warmer.log"
        warmer = {**settings.get("warmer", {}), "listen": f"127.0.0.1:{self.hint_port}",
                  "metricsListen": f"127.0.0.1:{self.metrics_port}"}
        self.config_path = self.workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump({**settings, "warmer": warmer}))
        self.process: subprocess.Popen | None = None

    def start(self) -> LocalWarmer:
        """Start it and wait until its metrics port (opened last) listens."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_SOURCE_ROOT, os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "webhook.cli", "warmer", "--config", str(self.config_path),
                   "--kubeconfig", str(self.kubeconfig), "--identity", self.identity]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        wait_for_port(self.metrics_port, self.process, timeout=30)
        return self

    def hint(self, requests: list[dict[str, str]], wait: float = 0) -> list[dict[str, Any]]:
        """POST hints and return the results."""
        response = urllib3.request("POST", f"http://127.0.0.1:{self.hint_port}/hints?wait={wait}",
                                   body=json.dumps({"requests": requests}), timeout=wait + 10)
        assert response.status == 200, response.data
        return json.loads(response.data)["results"]

    def metrics(self) -> str:
        return urllib3.request("GET", f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).data.decode()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as Kubernetes stops a container, and the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        if self.process is not None:
            stop(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)
