"""The emulated cluster's registries: the upstream, reached across the emulated WAN, and a fresh CCR per scenario."""

from __future__ import annotations

from pathlib import Path

from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer
from webhook.testing.wan import WanProxy


def registry_client(url: str) -> RegistryClient:
    """A client for a benchmark registry on loopback (plain HTTP), patient enough for gigabyte blobs."""
    return RegistryClient(url, insecure=True, connect_timeout=5, read_timeout=300, max_connections=8)


class Upstream:
    """A distribution registry with storage kept between runs (images pushed once), behind the emulated WAN."""

    def __init__(self, storage: Path, rtt_ms: float, mbit: float) -> None:
        self.server = RegistryServer(root=storage)
        self.wan = WanProxy(self.server.port, rtt_ms=rtt_ms, mbit_per_second=mbit)

    @property
    def registry(self) -> str:
        """host:port of the upstream as the cluster sees it: through the WAN."""
        return f"127.0.0.1:{self.wan.port}"

    def direct_client(self) -> RegistryClient:
        """A client that skips the WAN, for pushing the images before any measurement."""
        return registry_client(self.server.url)

    def __enter__(self) -> Upstream:
        self.server.start()
        self.wan.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wan.stop()
        self.server.cleanup()
