"""A client of a local test registry, with the short timeouts the tests use, and blob uploads seen from both sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webhook.registry.client import RegistryClient, digest_of
from webhook.testing.processes import RegistryServer


def client(url: str, credentials: Path | None = None, **overrides: Any) -> RegistryClient:
    """A client of the registry at `url` (plain http allowed); `overrides` replace the default timeouts and pool."""
    options = {"insecure": True, "connect_timeout": 1.0, "read_timeout": 10.0, "max_connections": 8, **overrides}
    return RegistryClient(url, credentials=str(credentials) if credentials else None, **options)


def upload_bytes(client: RegistryClient, repository: str, data: bytes) -> str:
    """Upload `data` as a blob in 64 KiB chunks; its digest."""
    digest = digest_of(data)
    client.upload_blob(repository, digest, len(data), [data[i : i + 65536] for i in range(0, len(data), 65536)])
    return digest


def open_uploads(server: RegistryServer, repository: str) -> list[str]:
    """Upload sessions the registry still holds (a cancelled one keeps only its hash state, not `startedat`)."""
    uploads = server.root / "docker/registry/v2/repositories" / repository / "_uploads"
    return sorted(path.parent.name for path in uploads.glob("*/startedat"))
