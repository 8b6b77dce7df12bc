"""Retention on a schedule, as the warmer runs it: only when enabled, only in the leader, failures survived."""

from __future__ import annotations

import dataclasses
import time

import pytest

from tests.support.waiting import wait_until
from webhook.config import RetentionConfig, parse_config
from webhook.registry.client import Registries
from webhook.retention.metrics import RetentionMetrics
from webhook.retention.schedule import ScheduledRetention
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration
REPOSITORY = "mirror/up/app"


def configure(server, **retention):
    config = parse_config(
        {
            "ccr": {"registry": server.host, "endpoint": server.url, "insecure": True},
            "upstreams": [{"registry": "up.io", "prefix": "mirror/up"}],
        }
    )
    return dataclasses.replace(config, retention=RetentionConfig(**retention))


def test_disabled_retention_neither_watches_nor_runs(empty_ccr, cluster):
    config = configure(empty_ccr, enabled=False, interval_seconds=0.1)
    scheduled = ScheduledRetention(config, cluster.api_client(), Registries(config).ccr, lambda: True).start()
    time.sleep(0.3)
    scheduled.stop()
    assert not cluster.requests


def test_only_the_leader_evicts_and_a_failed_run_does_not_stop_the_schedule(empty_ccr, cluster):
    config = configure(empty_ccr, enabled=True, max_unused_age_seconds=0, keep_newest=1, interval_seconds=0.2)
    registries = Registries(config)
    old = push_sample_image(registries.ccr, REPOSITORY, "old", [100], seed=1, created="2020-01-01T00:00:00Z")
    push_sample_image(registries.ccr, REPOSITORY, "new", [100], seed=2, created="2024-01-01T00:00:00Z")
    leading, asked = False, []

    def is_leader() -> bool:
        asked.append(leading)
        return leading

    metrics = RetentionMetrics()
    scheduled = ScheduledRetention(config, cluster.api_client(), registries.ccr, is_leader, metrics=metrics).start()
    try:
        assert scheduled.usage.wait_synced(5)
        wait_until(lambda: asked.count(False) >= 2, what="two intervals as a follower")
        assert registries.ccr.has_manifest(REPOSITORY, old.digest)
        empty_ccr.stop()  # the CCR goes away: runs fail, are logged, and the schedule goes on
        leading = True
        wait_until(lambda: asked.count(True) >= 2, what="a failed run as the leader, and the next interval")
        empty_ccr.start()
        wait_until(lambda: not registries.ccr.has_manifest(REPOSITORY, old.digest))
        wait_until(lambda: metrics.registry.get_sample_value("ccr_webhook_evictions_total") == 1)
    finally:
        scheduled.stop()
        registries.close()
