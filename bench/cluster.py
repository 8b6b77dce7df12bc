"""ccr-webhook installed in the emulated cluster: an empty CCR, the webhook over TLS, the warmer sidecar, an API server.

The API server is the tests' in-memory one: admission is the webhook's real /mutate over HTTPS, and each
admitted Pod is then stored there, so the warmer's Pod watch sees it as it would in a cluster.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.admit import admit_image
from bench.ccr import ccr_settings
from tests.support.fake_apiserver import FakeAPIServer
from tests.support.local_warmer import LocalWarmer, labelled_namespace, pod
from webhook.local_servers import RegistryServer
from webhook.local_webhook import LocalWebhook

NAMESPACE = "bench"


class CcrCluster:
    """Everything ccr-webhook needs, started fresh (an empty CCR, cold caches) for one scenario."""

    def __init__(self, upstream_registry: str, policy: dict[str, Any], deadline_seconds: float) -> None:
        self.upstream_registry = upstream_registry
        self.policy = policy
        self.deadline_seconds = deadline_seconds
        self.ccr = RegistryServer()
        self.api = FakeAPIServer()
        self.workdir = Path(tempfile.mkdtemp(prefix="ccr-bench-"))
        self._stack = contextlib.ExitStack()
        self.webhook: LocalWebhook | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """ccr-webhook's configuration (the CCR, the upstream through the WAN, the policy)."""
        return ccr_settings(self.ccr, self.upstream_registry, self.policy)

    def __enter__(self) -> CcrCluster:
        try:
            self._stack.enter_context(self.ccr)
            self._stack.enter_context(self.api)
            self.api.create(labelled_namespace(NAMESPACE))
            warmer = LocalWarmer(self.settings, self.api.write_kubeconfig(self.workdir / "kubeconfig"), "bench-warmer")
            self._stack.callback(warmer.cleanup)
            warmer.start()
            webhook = {"deadlineSeconds": self.deadline_seconds, "warmerUrl": f"http://127.0.0.1:{warmer.hint_port}"}
            self.webhook = self._stack.enter_context(LocalWebhook({**self.settings, "webhook": webhook}))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def admit(self, pod_name: str, image: str) -> str:
        """Admit a Pod running `image` through the webhook, store it in the API server, return the image it runs."""
        assert self.webhook is not None
        admitted = admit_image(f"{self.webhook.url}/mutate", self.webhook.client_ssl_context(), pod_name, image)
        self.api.create(pod(pod_name, admitted, namespace=NAMESPACE))
        return admitted
