"""An upstream registry and a CCR for a test module, as pytest fixtures (import them into the module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer


def client(url: str, credentials: Path | None = None) -> RegistryClient:
    """A client of a local registry, with the timeouts the tests use."""
    return RegistryClient(
        url,
        credentials=str(credentials) if credentials else None,
        insecure=True,
        connect_timeout=1.0,
        read_timeout=10.0,
        max_connections=8,
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryServer]:
    """The registry images are copied from."""
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def ccr() -> Iterator[RegistryServer]:
    """The registry images are copied into."""
    with RegistryServer() as server:
        yield server
