"""A retention configuration over one CCR, and the cluster's usage watched for it: what retention tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.clock import Clock
from webhook.config import Config, parse_config
from webhook.retention.usage import UsageTracker
from webhook.retention.watch import ClusterUsage
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.processes import RegistryServer


def retention_config(ccr: RegistryServer, **retention: Any) -> Config:
    """Retention on for `ccr`, mirroring `up.io` under `mirror/up`; `retention` over maxUnusedAge 7d, keepNewest 1."""
    return parse_config(
        {
            "ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True},
            "upstreams": [{"registry": "up.io", "prefix": "mirror/up"}],
            "retention": {"enabled": True, "maxUnusedAge": "7d", "keepNewest": 1, **retention},
        }
    )


@contextmanager
def watched_usage(cluster: LocalAPIServer, ccr: RegistryServer, clock: Clock) -> Iterator[ClusterUsage]:
    """The usage of `cluster`'s workloads, listed and watched, on `clock`."""
    config = retention_config(ccr)
    usage = ClusterUsage(cluster.api_client(), config, UsageTracker(config, clock=clock), watch_seconds=2).start()
    try:
        assert usage.wait_synced(5)
        yield usage
    finally:
        usage.stop()
