"""The fake API server speaks enough Kubernetes for the real client: CRUD, patches, conflicts, list+watch."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from webhook.testing.apiserver import LocalAPIServer, Resource

pytestmark = pytest.mark.integration


def pod(name: str, namespace: str = "default", **labels: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
    }


@pytest.fixture(scope="module")
def server():
    with LocalAPIServer(tls=True) as running:  # TLS here; the bootstrap tests use plain HTTP
        yield running


@pytest.fixture
def core(server):
    api_client = server.api_client()
    yield client.CoreV1Api(api_client)
    api_client.close()


def test_create_get_list_with_selectors_across_namespaces(server, core):
    server.create(pod("a", "ns1", app="web", tier="front"))
    core.create_namespaced_pod(
        "ns1",
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="b", labels={"app": "db"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="redis")]),
        ),
    )
    server.create(pod("c", "ns2", app="web"))
    assert core.read_namespaced_pod("b", "ns1").spec.containers[0].image == "redis"
    assert sorted(p.metadata.name for p in core.list_namespaced_pod("ns1").items) == ["a", "b"]
    assert sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(label_selector="app=web").items) == [
        "a",
        "c",
    ]
    assert [
        p.metadata.name for p in core.list_pod_for_all_namespaces(label_selector="app in (web,db),tier!=front").items
    ] == ["b", "c"]
    assert [
        p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="metadata.namespace=ns2").items
    ] == ["c"]
    listed = core.list_namespaced_pod("ns1")
    assert int(listed.metadata.resource_version) == server.resource_version
    assert {p.metadata.uid for p in listed.items} and all(p.metadata.resource_version for p in listed.items)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("ns1", pod("a", "ns1"))
    assert err.value.status == 409 and "AlreadyExists" in err.value.body
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("missing", "ns1")
    assert err.value.status == 404


def test_every_patch_type_and_optimistic_concurrency(server, core):
    server.create(pod("p", "patching", app="x"))
    merged = core.patch_namespaced_pod(
        "p", "patching", {"metadata": {"labels": {"b": "1", "app": None}}}, _content_type="application/merge-patch+json"
    )
    assert merged.metadata.labels == {"b": "1"}
    strategic = core.patch_namespaced_pod(
        "p",
        "patching",
        {"metadata": {"annotations": {"k": "v"}}},
        _content_type="application/strategic-merge-patch+json",
    )
    assert strategic.metadata.annotations == {"k": "v"}
    jsonpatched = core.patch_namespaced_pod(
        "p", "patching", [{"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.26"}]
    )
    assert jsonpatched.spec.containers[0].image == "nginx:1.26"
    assert int(jsonpatched.metadata.resource_version) > int(merged.metadata.resource_version)
    with pytest.raises(ApiException) as err:  # a failed `test` fails the whole patch
        core.patch_namespaced_pod(
            "p", "patching", [{"op": "test", "path": "/spec/containers/0/image", "value": "other"}]
        )
    assert err.value.status == 422
    stale = merged
    stale.metadata.labels = {"lost": "update"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("p", "patching", stale)
    assert err.value.status == 409
    assert server.get("Pod", "p", "patching")["metadata"]["labels"] == {"b": "1"}


def test_cluster_scoped_and_other_groups_and_custom_resources(server):
    api_client = server.api_client()
    core, coordination = client.CoreV1Api(api_client), client.CoordinationV1Api(api_client)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a", labels={"ccr-webhook/policy": "enforce"}))
    )
    assert server.get("Namespace", "team-a")["metadata"]["labels"] == {"ccr-webhook/policy": "enforce"}
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="warmer"), spec=client.V1LeaseSpec(holder_identity="pod-1")
    )
    coordination.create_namespaced_lease("ccr-system", lease)
    got = coordination.read_namespaced_lease("warmer", "ccr-system")
    got.spec.holder_identity = "pod-2"
    coordination.replace_namespaced_lease("warmer", "ccr-system", got)
    assert server.objects("Lease", "ccr-system")[0]["spec"]["holderIdentity"] == "pod-2"
    events = client.EventsV1Api(api_client)
    events.create_namespaced_event(
        "default",
        client.EventsV1Event(
            metadata=client.V1ObjectMeta(generate_name="warm-"),
            event_time="2026-01-01T00:00:00.000000Z",
            reason="Warmed",
            action="Copy",
            reporting_controller="ccr-webhook",
            reporting_instance="x",
        ),
    )
    (event,) = server.objects("Event", api_version="events.k8s.io/v1")
    assert event["metadata"]["name"].startswith("warm-") and event["reason"] == "Warmed"
    assert server.objects("Event") == []  # core/v1 Events are another resource
    server.register(Resource("example.com", "v1", "Widget", "widgets"))
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(
        "example.com",
        "v1",
        "default",
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
    )
    assert custom.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "w")["metadata"][
        "resourceVersion"
    ]
    api_client.close()


def collect(core, stop_after: int, **kwargs) -> tuple[list[tuple[str, str]], threading.Thread]:
    """Watch pods in namespace `w` in a thread until `stop_after` events or the watch's timeout."""
    seen: list[tuple[str, str]] = []
    stream = watch.Watch()

    def run() -> None:
        for event in stream.stream(core.list_namespaced_pod, "w", **kwargs):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == stop_after:
                stream.stop()

    thread = threading.Thread(target=run)
    thread.start()
    return seen, thread


def test_watch_streams_changes_from_a_resource_version(server, core):
    server.create(pod("old", "w"))
    start = core.list_namespaced_pod("w").metadata.resource_version
    server.create(pod("new", "w", app="x"))  # after `start`, before the watch begins: still delivered
    seen, thread = collect(core, 4, resource_version=start, timeout_seconds=30)
    server.patch("Pod", "new", {"metadata": {"labels": {"app": "y"}}}, "w")
    server.create(pod("elsewhere", "other-namespace"))
    server.delete("Pod", "new", "w")
    server.delete("Pod", "old", "w")
    thread.join(30)
    assert seen == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "new"), ("DELETED", "old")]


def test_watch_without_a_version_starts_with_what_exists_and_ends_at_its_timeout(server, core):
    server.create(pod("present", "w", app="z"))
    seen, thread = collect(core, 99, label_selector="app=z", timeout_seconds=1)
    thread.join(30)
    assert not thread.is_alive() and seen == [("ADDED", "present")]


def test_watch_from_a_compacted_version_gets_410_gone(server, core):
    start = core.list_namespaced_pod("w").metadata.resource_version
    server.create(pod("after", "w"))
    server.compact()
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(core.list_namespaced_pod, "w", resource_version=start, timeout_seconds=5):
            pass
    assert err.value.status == 410


def test_injected_faults_and_dry_run(server, core):
    server.fail_next(500, method="GET", path_contains="/pods/x")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("x", "faults")
    assert err.value.status == 500
    core.create_namespaced_pod("faults", pod("dry", "faults"), dry_run="All")
    assert server.get("Pod", "dry", "faults") is None
    assert server.requests_to("POST", "/namespaces/faults/pods")[-1].query["dryRun"] == "All"
