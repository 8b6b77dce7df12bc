"""`ccr-webhook front` as a local subprocess on a port of its own: for the demo, tests and benchmarks."""

from __future__ import annotations

from typing import Any

import urllib3
import yaml

from webhook.testing.processes import LocalCommand, free_port


class LocalFront(LocalCommand):
    """One `ccr-webhook front` process on 127.0.0.1, its spool in its work directory unless `settings` say."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.port = free_port()
        super().__init__("front", settings, prefix="ccr-front-")
        front = {"spoolDir": str(self.workdir / "spool"), **settings.get("front", {})}
        front["listen"] = f"127.0.0.1:{self.port}"
        self.config_path.write_text(yaml.safe_dump({**settings, "front": front}))

    @property
    def host(self) -> str:
        """host:port, as an image reference names the front."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> LocalFront:
        """Start it and wait until it listens."""
        self.launch()
        self.wait_listening(self.port, timeout=30)
        return self

    def metrics(self) -> str:
        """The front's Prometheus exposition."""
        return urllib3.request("GET", f"{self.url}/metrics", timeout=5).data.decode()

    def __enter__(self) -> LocalFront:
        return self.start()
