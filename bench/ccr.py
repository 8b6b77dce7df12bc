"""The CCR side of the emulated cluster: an empty CCR per scenario, ccr-webhook's configuration, the pre-warm, a watch.

The CCR is a distribution registry on loopback (the cluster's LAN); ccr-webhook is configured with it and
with the upstream as seen through the WAN, so every byte the warmer copies crosses the WAN once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.testbed import registry_client
from webhook.config import parse_config
from webhook.policy.decide import warm_request_for
from webhook.policy.reference import ImageReference, parse_image
from webhook.testing.processes import LocalCommand, RegistryServer

UPSTREAM_PREFIX = "upstream"


def ccr_settings(ccr: RegistryServer, upstream_registry: str, policy: dict[str, Any]) -> dict[str, Any]:
    """ccr-webhook's configuration mapping: this CCR, the upstream through the WAN, and `policy`."""
    return {
        "ccr": {"registry": ccr.host, "insecure": True},
        "upstreams": [{"registry": upstream_registry, "insecure": True, "prefix": UPSTREAM_PREFIX}],
        "policy": policy,
    }


def ccr_name(settings: dict[str, Any], image: str, digest: str) -> ImageReference:
    """Where admission and the warmer put upstream `image` (pinned to `digest`) in the CCR."""
    return warm_request_for(parse_image(image), digest, parse_config(settings)).target


def prewarm(settings: dict[str, Any], image: str) -> float:
    """Run `ccr-webhook warm IMAGE`, as an operator would before a rollout; return its seconds."""
    warm = LocalCommand("warm", settings, prefix="ccr-bench-warm-")
    try:
        started = time.monotonic()
        returncode = warm.launch(image).wait()
        if returncode != 0:
            raise RuntimeError(f"ccr-webhook warm {image} failed ({returncode}): {warm.log().strip()[-2000:]}")
        return time.monotonic() - started
    finally:
        warm.cleanup()


class CcrWatch:
    """Polls the CCR from a thread until it holds `target` (manifest by digest); `held_at` says when from `since`."""

    POLL_SECONDS = 0.2

    def __init__(self, ccr: RegistryServer, target: ImageReference, since: float) -> None:
        self.client = registry_client(ccr.url)
        self.target = target
        self.since = since
        self.held_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ccr-watch", daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self.client.has_manifest(self.target.repository, self.target.digest or "", timeout=5):
                self.held_at = time.monotonic() - self.since
                return
            self._stop.wait(self.POLL_SECONDS)

    def wait(self, timeout: float) -> float | None:
        """Wait up to `timeout` seconds for the CCR to hold the image; the time it did, from `since`, or None."""
        self._thread.join(timeout)
        return self.held_at

    def __enter__(self) -> CcrWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()
