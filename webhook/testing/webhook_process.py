"""`ccr-webhook serve` as a local subprocess over TLS, with a CA of its own: for the demo, tests and benchmarks.

Product code beside local_servers.py for the same reason: the demo runs the webhook the way the tests do.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from webhook.testing.processes import LocalCommand, free_port
from webhook.tls import generate_ca, issue_serving_cert


class LocalWebhook(LocalCommand):
    """One `ccr-webhook serve` process on 127.0.0.1 with a fresh CA and serving certificate.

    `settings` is the configuration mapping (ccr, upstreams, policy, ...); the `webhook` section's
    listen address and certificate paths are filled in here. `serve_args` go on the command line.
    """

    def __init__(self, settings: dict[str, Any], workers: int = 2, serve_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.workers = workers
        self.serve_args = tuple(serve_args)
        ca = generate_ca()
        pair = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
        super().__init__("serve", settings, prefix="ccr-webhook-")
        self.ca_file = self.workdir / "ca.crt"
        self.ca_file.write_bytes(ca.cert_pem)
        pair.write(self.workdir / "tls.crt", self.workdir / "tls.key")
        webhook_section = {
            **settings.get("webhook", {}),
            "listen": f"127.0.0.1:{self.port}",
            "tlsCert": str(self.workdir / "tls.crt"),
            "tlsKey": str(self.workdir / "tls.key"),
        }
        self.config_path.write_text(yaml.safe_dump({**settings, "webhook": webhook_section}))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this webhook's CA, and checks the host name."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self, timeout: float = 30.0) -> LocalWebhook:
        """Start serving and wait until a worker answers /readyz."""
        self.launch("--workers", str(self.workers), *self.serve_args)
        self.wait_listening(self.port, timeout)
        self._wait_ready(time.monotonic() + timeout)
        return self

    def _wait_ready(self, deadline: float) -> None:
        context = self.client_ssl_context()
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline or self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"the webhook did not become ready; log:\n{self.log()}") from None
                time.sleep(0.05)

    def pids(self) -> list[int]:
        """The gunicorn master and its workers."""
        if self.process is None:
            return []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [self.process.pid, *map(int, children)]

    def __enter__(self) -> LocalWebhook:
        return self.start()
