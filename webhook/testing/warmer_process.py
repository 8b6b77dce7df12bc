"""`ccr-webhook warmer` as a local subprocess with its own hint and metrics ports, for demo, tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import urllib3

from webhook.testing.processes import LocalCommand, free_port


class LocalWarmer(LocalCommand):
    """One `ccr-webhook warmer` process on 127.0.0.1, talking to the Kubernetes API named by `kubeconfig`."""

    def __init__(self, settings: dict[str, Any], kubeconfig: Path, identity: str) -> None:
        self.hint_port, self.metrics_port = free_port(), free_port()
        self.identity = identity
        self.kubeconfig = kubeconfig
        warmer = {
            **settings.get("warmer", {}),
            "listen": f"127.0.0.1:{self.hint_port}",
            "metricsListen": f"127.0.0.1:{self.metrics_port}",
        }
        super().__init__("warmer", {**settings, "warmer": warmer}, prefix="ccr-warmer-")

    @property
    def hint_url(self) -> str:
        """Where the webhook sends hints (its `webhook.warmerUrl`)."""
        return f"http://127.0.0.1:{self.hint_port}"

    def start(self) -> LocalWarmer:
        """Start it and wait until its metrics port (opened last) listens."""
        self.launch("--kubeconfig", str(self.kubeconfig), "--identity", self.identity)
        self.wait_listening(self.metrics_port, timeout=30)
        return self

    def hint(self, requests: list[dict[str, str]], wait: float = 0) -> list[dict[str, Any]]:
        """POST hints, waiting up to `wait` seconds for them, and return the warmer's answer for each."""
        response = urllib3.request(
            "POST", f"{self.hint_url}/hints?wait={wait}", body=json.dumps({"requests": requests}), timeout=wait + 10
        )
        if response.status != 200:
            raise RuntimeError(f"the warmer refused the hints: {response.status} {response.data[:200]!r}")
        return json.loads(response.data)["results"]

    def metrics(self) -> str:
        """The warmer's Prometheus exposition."""
        return urllib3.request("GET", f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).data.decode()

    def __enter__(self) -> LocalWarmer:
        return self.start()
