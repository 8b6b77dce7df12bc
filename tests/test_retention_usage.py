"""Usage tracking: which CCR images live objects name, from plain objects and from a (fake) API server."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.support.clock import Clock
from tests.support.waiting import wait_until
from tests.support.workloads import namespace, pod
from webhook.config import parse_config
from webhook.retention.usage import ImageUse, InUse, UsageTracker, ccr_use, uses_of
from webhook.retention.watch import ClusterUsage

CONFIG = parse_config({"ccr": {"registry": "ccr:5000"}, "upstreams": [{"registry": "up.io", "prefix": "mirror/up"}]})
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


@pytest.mark.parametrize(
    ("image", "use"),
    [
        (f"ccr:5000/mirror/up/app:1@{D1}", ImageUse("mirror/up/app", D1, upstream_name=False)),
        ("ccr:5000/mirror/up/app:1", ImageUse("mirror/up/app", "1", upstream_name=False)),
        (f"up.io/app@{D1}", ImageUse("mirror/up/app", D1, upstream_name=True)),
        ("up.io/team/app:2", ImageUse("mirror/up/team/app", "2", upstream_name=True)),
        ("up.io/team/app", ImageUse("mirror/up/team/app", "latest", upstream_name=True)),
        (f"other.io/app@{D1}", None),  # not mirrored: never in the CCR
        ("Not An Image", None),
    ],
)
def test_ccr_use_maps_ccr_and_upstream_names_to_the_ccr_repository(image, use):
    assert ccr_use(image, CONFIG) == use


@pytest.mark.parametrize(
    ("kind", "api_version", "path"),
    [
        ("Deployment", "apps/v1", ("spec", "template", "spec")),
        ("StatefulSet", "apps/v1", ("spec", "template", "spec")),
        ("DaemonSet", "apps/v1", ("spec", "template", "spec")),
        ("ReplicaSet", "apps/v1", ("spec", "template", "spec")),
        ("Job", "batch/v1", ("spec", "template", "spec")),
        ("CronJob", "batch/v1", ("spec", "jobTemplate", "spec", "template", "spec")),
    ],
)
def test_every_workload_kind_names_the_images_of_its_pod_template(kind, api_version, path):
    body: dict = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "w", "namespace": "team-a"},
        "spec": {"replicas": 0},
    }
    spec = body
    for key in path:
        spec = spec.setdefault(key, {})
    spec.update(
        {
            "initContainers": [{"name": "i", "image": f"up.io/init@{D1}"}],
            "containers": [{"name": "c", "image": "ccr:5000/mirror/up/app:2"}],
        }
    )
    assert uses_of(body, CONFIG) == {ImageUse("mirror/up/init", D1, True), ImageUse("mirror/up/app", "2", False)}


def test_a_pod_also_uses_the_digests_its_containers_report_running():
    status = {
        "containerStatuses": [{"name": "c0", "imageID": f"docker-pullable://ccr:5000/mirror/up/app@{D2}"}],
        "initContainerStatuses": [{"name": "i", "imageID": f"up.io/init@{D3}"}],
        "ephemeralContainerStatuses": [{"name": "e", "imageID": ""}],
    }
    uses = uses_of(pod("p", "ccr:5000/mirror/up/app:1", status=status), CONFIG)
    assert uses == {
        ImageUse("mirror/up/app", "1", False),
        ImageUse("mirror/up/app", D2, False),
        ImageUse("mirror/up/init", D3, True),
    }


def test_ccr_names_count_everywhere_upstream_names_only_in_opted_in_namespaces():
    tracker = UsageTracker(CONFIG)
    tracker.replace("Namespace", [namespace("team-a"), namespace("elsewhere", opted_in=False)])
    tracker.replace(
        "Pod",
        [
            pod("a", f"up.io/app@{D1}"),
            pod("b", f"up.io/app@{D2}", namespace="elsewhere"),
            pod("c", f"ccr:5000/mirror/up/app@{D3}", namespace="elsewhere"),
        ],
    )
    assert tracker.in_use().digests == {("mirror/up/app", D1), ("mirror/up/app", D3)}
    tracker.apply("MODIFIED", namespace("elsewhere"))
    assert ("mirror/up/app", D2) in tracker.in_use().digests
    tracker.apply("DELETED", namespace("team-a"))
    assert tracker.in_use().digests == {("mirror/up/app", D2), ("mirror/up/app", D3)}


def test_last_seen_is_when_the_last_object_naming_it_went_and_the_start_for_the_never_seen():
    clock = Clock(1000.0)
    tracker = UsageTracker(CONFIG, clock=clock)
    tracker.replace("Namespace", [namespace("team-a")])
    tracker.replace("Pod", [pod("a", f"up.io/app@{D1}"), pod("b", f"up.io/app@{D1}")])
    assert tracker.last_seen("mirror/up/app", D1) == 1000.0
    clock.now = 1500.0
    tracker.in_use()  # named now: stamped now
    assert tracker.last_seen("mirror/up/app", D1) == 1500.0
    clock.now = 2000.0
    tracker.apply("DELETED", pod("a", f"up.io/app@{D1}"))  # a named it until now
    assert tracker.last_seen("mirror/up/app", D1) == 2000.0
    clock.now = 3000.0
    tracker.apply("MODIFIED", pod("b", f"up.io/app@{D2}"))  # b moved on: D1 was last named now
    clock.now = 5000.0
    assert tracker.last_seen("mirror/up/app", D1) == 3000.0
    assert tracker.in_use().digests == {("mirror/up/app", D2)}
    assert tracker.last_seen("mirror/up/app", D3) == 1000.0  # never seen: as if at start (conservative)
    clock.now = 6000.0
    tracker.replace("Pod", [])  # a relist that no longer has b
    assert tracker.last_seen("mirror/up/app", D2) == 6000.0
    assert tracker.seen_digests() == {("mirror/up/app", D1), ("mirror/up/app", D2)}
    tracker.forget("mirror/up/app", D1)
    assert tracker.seen_digests() == {("mirror/up/app", D2)}


def test_opting_a_namespace_out_stamps_its_upstream_names_as_last_seen_then():
    clock = Clock(1000.0)
    tracker = UsageTracker(CONFIG, clock=clock)
    tracker.replace("Namespace", [namespace("team-a")])
    tracker.replace(
        "Deployment",
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "team-a"},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": f"up.io/app@{D1}"}]}}},
            }
        ],
    )
    clock.now = 2000.0
    tracker.apply("MODIFIED", namespace("team-a", opted_in=False))
    clock.now = 9000.0
    assert not tracker.in_use().digests
    assert tracker.last_seen("mirror/up/app", D1) == 2000.0


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
        time.sleep(1.2)  # past the watch's timeoutSeconds: it resumes from the last version seen
        cluster.create(pod("later", f"up.io/app@{D3}"))
        wait_until(lambda: ("mirror/up/app", D3) in usage.tracker.in_use().digests)


def test_cluster_usage_lists_again_after_410_gone_and_after_errors(cluster):
    with following(cluster, retry_seconds=0.1) as usage:
        cluster.fail_next(500, method="GET", path_contains="/pods", times=2)
        cluster.compact()  # the next watch from an old version gets 410 Gone
        time.sleep(1.2)
        cluster.create(pod("after-compaction", f"up.io/app@{D1}"))
        wait_until(lambda: ("mirror/up/app", D1) in usage.tracker.in_use().digests)


def test_confirm_lists_afresh_so_an_object_the_watch_has_not_delivered_still_counts(cluster):
    usage = ClusterUsage(cluster.api_client(), CONFIG, watch_seconds=1)  # not started: no watch at all
    cluster.create(pod("new", f"up.io/app@{D1}"))
    assert usage.confirm().digests == {("mirror/up/app", D1)}
    assert not usage.tracker.in_use().digests
