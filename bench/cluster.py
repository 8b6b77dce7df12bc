"""ccr-webhook installed in the emulated cluster: an empty CCR, the webhook over TLS, the warmer sidecar, an API server,
and (for the scenarios that have it) the CCR front that nodes pull through. Several front replicas run as
production runs them: each with a registry of its own, every registry on one S3 bucket (moto on loopback).

The API server is the package's in-memory one: admission is the webhook's real /mutate over HTTPS, and
each admitted Pod is then stored there, so the warmer's Pod watch sees it as it would in a cluster.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from typing import Any

from bench.ccr import ccr_settings
from webhook.config import WarmerConfig
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.review_client import admitted_pod, pod_object, pod_review, send_review
from webhook.testing.s3 import S3Server
from webhook.testing.warmer_process import LocalWarmer
from webhook.testing.webhook_process import LocalWebhook

NAMESPACE = "bench"


class CcrCluster:
    """Everything ccr-webhook needs, started fresh (an empty CCR, cold caches) for one scenario."""

    def __init__(
        self,
        upstream_registry: str,
        policy: dict[str, Any],
        deadline_seconds: float,
        front: bool = False,
        replicas: int = 1,
    ) -> None:
        self.s3 = S3Server() if front and replicas > 1 else None
        storage = self.s3.storage() if self.s3 is not None else None
        self.ccr = RegistryServer(storage=storage)  # the warmer's and the webhook's; replica 0's with one replica
        self.settings = ccr_settings(self.ccr, upstream_registry, policy)
        self.registries = [RegistryServer(storage=storage) for _ in range(replicas)] if self.s3 is not None else []
        self.fronts: list[LocalFront] = []
        self.front: LocalFront | None = None
        self._peers_dir = tempfile.TemporaryDirectory(prefix="ccr-bench-peers-")
        if front:  # nodes reach the front as ccr.registry; it and the warmer reach the registry at ccr.endpoint
            endpoints = [registry.url for registry in self.registries] or [self.ccr.url]
            self.fronts = [
                LocalFront({**self.settings, "ccr": {**self.settings["ccr"], "endpoint": endpoint}, "front": settings})
                for endpoint, settings in zip(endpoints, self._peering(replicas), strict=True)
            ]
            self.front = self.fronts[0]
            self.settings["ccr"] = {**self.settings["ccr"], "registry": self.front.host, "endpoint": self.ccr.url}
        self.deadline_seconds = deadline_seconds
        self.api = LocalAPIServer()
        self._stack = contextlib.ExitStack()
        self.webhook: LocalWebhook | None = None

    def __enter__(self) -> CcrCluster:
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ccr-bench-")))
            if self.s3 is not None:
                stack.enter_context(self.s3)
            stack.enter_context(self.ccr)
            for registry in self.registries:
                stack.enter_context(registry)
            stack.callback(self._peers_dir.cleanup)
            for replica in self.fronts:
                stack.callback(replica.cleanup)
                replica.start()
            stack.enter_context(self.api)
            label = WarmerConfig().namespace_label
            self.api.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {label: "enforce"}}}
            )
            warmer = LocalWarmer(self.settings, self.api.write_kubeconfig(workdir / "kubeconfig"), "bench-warmer")
            stack.callback(warmer.cleanup)
            warmer.start()
            webhook = {"deadlineSeconds": self.deadline_seconds, "warmerUrl": warmer.hint_url}
            self.webhook = stack.enter_context(LocalWebhook({**self.settings, "webhook": webhook}))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _peering(self, replicas: int) -> list[dict[str, Any]]:
        """The `front:` settings of each replica: none for one, a static peer list and a shared secret for more."""
        if replicas == 1:  # on the filesystem, as the base install: held blobs are sent from its files
            return [{"registryStorageDir": str(self.ccr.root)}]
        secret = Path(self._peers_dir.name) / "secret"
        secret.write_text("bench-peers\n")
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(replicas)]
        return [
            {"peers": addresses, "peerListen": address, "peerAddress": address, "peerSecret": str(secret)}
            for address in addresses
        ]

    def front_figures(self) -> dict[str, float]:
        """What the fronts counted, summed over the replicas (bytes from upstream and from peers, fetches, mean time
        to first byte); empty without a front."""
        if not self.fronts:
            return {}
        texts = [replica.metrics() for replica in self.fronts]

        def sample(name: str, labels: str = "") -> float:
            found = (re.search(rf"^{name}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE) for text in texts)
            return sum(float(match.group(1)) for match in found if match)

        answers = sample("ccr_front_first_byte_seconds_count")
        return {
            "front_upstream_bytes": sample("ccr_front_upstream_bytes_total"),
            "front_fetches_committed": sample("ccr_front_fetches_total", '{outcome="committed"}'),
            "front_served_from_flight": sample("ccr_front_served_bytes_total", '{source="flight"}'),
            "front_first_byte_mean_seconds": sample("ccr_front_first_byte_seconds_sum") / answers if answers else 0.0,
            "front_replicas": len(self.fronts),
            "front_owned_fetches": sample("ccr_front_owned_fetches_total"),
            "front_peer_bytes": sample("ccr_front_peer_received_bytes_total"),
        }

    def node_image(self, image: str, node: int) -> str:
        """`image` as node `node` pulls it: through the front replica the Service would send it to (round robin)."""
        if len(self.fronts) < 2 or self.front is None:
            return image
        return image.replace(self.front.host, self.fronts[node % len(self.fronts)].host, 1)

    def admit(self, pod_name: str, image: str) -> str:
        """Admit a Pod running `image` through the webhook, store it in the API server, return the image it runs."""
        assert self.webhook is not None
        review = pod_review(pod_object(pod_name, NAMESPACE, [("app", image)]))
        response = send_review(f"{self.webhook.url}/mutate", review, self.webhook.client_ssl_context())
        pod = admitted_pod(review, response)
        self.api.create(pod)
        return pod["spec"]["containers"][0]["image"]
