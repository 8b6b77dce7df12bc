"""The warmer's test scene: an upstream (behind a recording, throttling proxy) with one image, a CCR, the fake
API server with a namespace labelled enforce; and `ccr-webhook warmer` as a subprocess, so a test can SIGKILL
it mid-copy or run two and watch the Lease change hands.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from tests.support.registry_proxy import RegistryProxy
from webhook.config import parse_config
from webhook.registry.client import RegistryClient
from webhook.registry.errors import RegistryUnavailable
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import PushedImage, push_sample_image
from webhook.warmer.service import Warmer

NAMESPACE = "team"  # labelled enforce in the tests' API server
POLICY_LABEL = "ccr-webhook/policy"


def mirror_settings(
    upstream_host: str, upstream_url: str, ccr: RegistryServer, **sections: dict[str, Any]
) -> dict[str, Any]:
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
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": f"c{index}", "image": image} for index, image in enumerate(images)]},
    }


def post_hints(warmer: Warmer, requests: list[dict], wait: float = 0, peer: str = "127.0.0.1") -> list[dict]:
    """POST hints to `warmer`'s hint port, waiting up to `wait` seconds; the results (the answer must be 200)."""
    response = urllib3.request(
        "POST",
        f"http://{peer}:{warmer.hint_server.port}/hints?wait={wait}",
        body=json.dumps({"requests": requests}),
        timeout=wait + 10,
    )
    assert response.status == 200, response.data
    return json.loads(response.data)["results"]


@dataclass
class Scene:
    """The servers of a warm test and the image pushed upstream (team/app:1.0, three layers)."""

    upstream: RegistryServer
    proxy: RegistryProxy
    ccr: RegistryServer
    api: LocalAPIServer
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
        return mirror_settings(
            self.upstream_host,
            self.proxy.url,
            self.ccr,
            **{**sections, "warmer": {**fast, **sections.get("warmer", {})}},
        )

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
        """Whether the CCR serves the image yet. The registry's filesystem driver can answer 500 for a manifest
        being written (its writes are not atomic); like the webhook, take that as "not yet"."""
        try:
            return self.ccr_client().has_manifest("mirror/team/app", self.image.digest)
        except RegistryUnavailable:
            return False

    def blob_downloads(self) -> Counter:
        """How often each blob was downloaded from the upstream."""
        return Counter(path for method, path, _ in self.proxy.requests if method == "GET" and "/blobs/sha256:" in path)


@contextlib.contextmanager
def warm_scene(workdir: Path, ccr_server: RegistryServer | None = None) -> Iterator[Scene]:
    """A running Scene (its CCR `ccr_server` if given, started here), torn down (warmers first) on exit."""
    with RegistryServer() as upstream, ccr_server or RegistryServer() as ccr, LocalAPIServer() as api:
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
