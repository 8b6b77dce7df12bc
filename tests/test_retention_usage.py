"""Usage tracking: which CCR images live objects name, and when each was last used, from plain objects."""

from __future__ import annotations

import pytest

from tests.support.clock import Clock
from tests.support.workloads import namespace, pod
from webhook.config import parse_config
from webhook.retention.usage import ImageUse, UsageTracker, ccr_use, uses_of

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
