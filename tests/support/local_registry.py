"""A client of a local test registry, with the short timeouts the tests use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webhook.registry.client import RegistryClient


def client(url: str, credentials: Path | None = None, **overrides: Any) -> RegistryClient:
    """A client of the registry at `url` (plain http allowed); `overrides` replace the default timeouts and pool."""
    options = {"insecure": True, "connect_timeout": 1.0, "read_timeout": 10.0, "max_connections": 8, **overrides}
    return RegistryClient(url, credentials=str(credentials) if credentials else None, **options)
