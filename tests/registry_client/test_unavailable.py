"""A registry in trouble: 5xx is unavailable, 429 rate limited, nothing listening or answering is timed out."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.local_registry import client as make_client
from tests.support.waiting import deadline_ceiling
from webhook.registry.client import (
    RateLimited,
    RegistryUnavailable,
)
from webhook.testing.processes import free_port

pytestmark = pytest.mark.integration


def test_server_errors_are_unavailable_and_429_is_rate_limited_with_retry_after(proxy):
    proxy.faults += [(503, {}), (429, {"Retry-After": "7"})]
    client = make_client(proxy.url)
    with pytest.raises(RegistryUnavailable, match="HTTP 503"):
        client.resolve_digest("sample/single", "v1")
    with pytest.raises(RateLimited) as raised:
        client.resolve_digest("sample/single", "v1")
    assert raised.value.retry_after == 7.0 and "sample/single" in str(raised.value)


def test_an_unreachable_registry_is_unavailable_at_once():
    client = make_client(f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="cannot connect") as raised:
        client.resolve_digest("any/repo", "v1")
    assert time.monotonic() - started < deadline_ceiling(client.connect_timeout)  # not retried, not waited out
    assert "any/repo" in str(raised.value)


@pytest.fixture
def silent_port():
    """A port that accepts connections (into the backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_timeouts_are_honoured(silent_port):
    url = f"http://127.0.0.1:{silent_port}"
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="no answer in time"):
        make_client(url, read_timeout=0.3).resolve_digest("any/repo", "v1")
    assert time.monotonic() - started < deadline_ceiling(0.3)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable):
        make_client(url, read_timeout=30).resolve_digest("any/repo", "v1", timeout=0.2)
    assert time.monotonic() - started < deadline_ceiling(0.2)  # the call's timeout, not the read timeout
