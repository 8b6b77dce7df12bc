"""Usage followed through the (fake) API server with the real kubernetes client: list, watch, 410 Gone, confirm."""

from __future__ import annotations

import contextlib

import pytest

from tests.support.waiting import wait_until
from tests.support.workloads import pod
from webhook.config import parse_config
from webhook.retention.usage import InUse
from webhook.retention.watch import ClusterUsage

pytestmark = pytest.mark.integration

CONFIG = parse_config({"ccr": {"registry": "ccr:5000"}, "upstreams": [{"registry": "up.io", "prefix": "mirror/up"}]})
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def pod_requests(cluster, watch: bool | None = None):
    """The GETs of Pods the fake API server has seen, oldest first: all, only watches, or only lists."""
    found = cluster.requests_to("GET", "/api/v1/pods")
    return found if watch is None else [r for r in found if ("watch" in r.query) == watch]


@contextlib.contextmanager
def following(cluster, **options):
    """Usage tracking that follows `cluster` until the block ends."""
    usage = ClusterUsage(cluster.api_client(), CONFIG, watch_seconds=1, **options).start()
    try:
        assert usage.wait_synced(5)
        yield usage
    finally:
        usage.stop()


def test_cluster_usage_lists_then_follows_every_kind_through_the_real_client(cluster):
    cluster.create(pod("running", f"up.io/app@{D1}"))
    cluster.create(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": "team-a"},
            "spec": {
                "schedule": "@daily",
                "jobTemplate": {
                    "spec": {
                        "template": {"spec": {"containers": [{"name": "c", "image": f"ccr:5000/mirror/up/batch@{D2}"}]}}
                    }
                },
            },
        }
    )
    with following(cluster) as usage:
        assert usage.tracker.in_use().digests == {("mirror/up/app", D1), ("mirror/up/batch", D2)}
        cluster.create(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "idle", "namespace": "team-a"},
                "spec": {"replicas": 0, "template": {"spec": {"containers": [{"name": "c", "image": "up.io/web:3"}]}}},
            }
        )
        cluster.delete("Pod", "running", "team-a")
        wait_until(
            lambda: (
                usage.tracker.in_use()
                == InUse(digests=frozenset({("mirror/up/batch", D2)}), tags=frozenset({("mirror/up/web", "3")}))
            )
        )
        watches = len(pod_requests(cluster, watch=True))
        wait_until(lambda: len(pod_requests(cluster, watch=True)) > watches, what="a watch after timeoutSeconds")
        cluster.create(pod("later", f"up.io/app@{D3}"))
        wait_until(lambda: ("mirror/up/app", D3) in usage.tracker.in_use().digests)


def test_cluster_usage_lists_again_after_410_gone_and_after_errors(cluster):
    with following(cluster, retry_seconds=0.1) as usage:
        cluster.fail_next(500, method="GET", path_contains="/pods", times=2)
        cluster.compact()  # the next watch from an old version gets 410 Gone
        asked = len(pod_requests(cluster))
        wait_until(  # past the two failures (and the 410), watching again
            lambda: len(pod_requests(cluster)) >= asked + 3 and "watch" in pod_requests(cluster)[-1].query,
            what="a watch after the failures",
        )
        cluster.create(pod("after-compaction", f"up.io/app@{D1}"))
        wait_until(lambda: ("mirror/up/app", D1) in usage.tracker.in_use().digests)


def test_confirm_lists_afresh_so_an_object_the_watch_has_not_delivered_still_counts(cluster):
    usage = ClusterUsage(cluster.api_client(), CONFIG, watch_seconds=1)  # not started: no watch at all
    cluster.create(pod("new", f"up.io/app@{D1}"))
    assert usage.confirm().digests == {("mirror/up/app", D1)}
    assert not usage.tracker.in_use().digests
