"""Registries: one client per configured registry, made once, and no client for any other host."""

from __future__ import annotations

import pytest

from webhook.config import parse_config
from webhook.registry.client import (
    Registries,
    RegistryNotAllowed,
)

pytestmark = pytest.mark.integration


def test_registries_gives_configured_clients_once_and_refuses_any_other_host():
    config = parse_config(
        {
            "ccr": {"registry": "ccr.local:5000", "endpoint": "http://127.0.0.1:1", "insecure": True},
            "upstreams": [
                {"registry": "docker.io", "redirectHosts": ["*.cloudflare.docker.com"]},
                {"registry": "quay.io"},
            ],
            "resolver": {"connectTimeoutSeconds": 0.5, "readTimeoutSeconds": 2},
        }
    )
    registries = Registries(config)
    assert registries.upstream("docker.io").redirect_hosts == ("*.cloudflare.docker.com",)
    assert registries.upstream("quay.io").redirect_hosts is None and registries.ccr.redirect_hosts is None
    assert registries.upstream("docker.io").token_hosts == ("auth.docker.io",)
    assert registries.upstream("quay.io").token_hosts is None and registries.ccr.token_hosts is None
    assert registries.ccr.endpoint == "http://127.0.0.1:1"
    assert registries.upstream("docker.io").endpoint == "https://registry-1.docker.io"
    assert registries.upstream("docker.io") is registries.upstream("docker.io")
    assert registries.upstream("quay.io").read_timeout == 2
    for host in ("evil.example.com", "ccr.local:5000", "registry-1.docker.io"):
        with pytest.raises(RegistryNotAllowed, match="not a configured upstream"):
            registries.upstream(host)
