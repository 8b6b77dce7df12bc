"""The warmer's Pod watch against the fake API server through the real kubernetes client: labelled namespaces, 410."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client

from tests.support.waiting import wait_until
from webhook.kube.informer import Informer
from webhook.testing.apiserver import LocalAPIServer
from webhook.warmer.watch import PodWatch

pytestmark = pytest.mark.integration

LABEL = "ccr-webhook/policy"


class Sink:
    """Records what the watch hands over."""

    def __init__(self):
        self.seen: list[tuple[str, bool]] = []
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def pods(self, pods, complete):
        with self.lock:
            self.seen += [(f"{p['metadata']['namespace']}/{p['metadata']['name']}", complete) for p in pods]

    def gone(self, pod):
        self.deleted.append(pod["metadata"]["name"])

    def names(self):
        with self.lock:
            return {name for name, _ in self.seen}


def namespace(name, policy=None):
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {LABEL: policy} if policy else {}},
    }


def pod(name, ns):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
    }


@pytest.fixture
def api():
    with LocalAPIServer() as server:
        for name, policy in (("team", "enforce"), ("trial", "dry-run"), ("other", None)):
            server.create(namespace(name, policy))
            server.create(pod(f"{name}-1", name))
        yield server


@pytest.fixture
def start(api):
    """Starts a PodWatch on a Pod informer of its own (the warmer shares the process's); both stop at the end."""
    started = []

    def start(values=("enforce",), **options):
        sink = Sink()
        core = client.CoreV1Api(api.api_client())
        pods = Informer(core.list_pod_for_all_namespaces, kind="Pod", api_version="v1", **options).start()
        watch = PodWatch(
            core, pods, label=LABEL, values=values, on_pods=sink.pods, on_deleted=sink.gone, **options
        ).start()
        started.append((watch, pods))
        return watch, sink

    yield start
    for watch, pods in started:
        watch.stop()
        pods.stop()


def test_lists_the_pods_of_labelled_namespaces_then_follows_changes(api, start):
    watch, sink = start()
    try:
        wait_until(lambda: ("team/team-1", True) in sink.seen, what="the first listing")
        api.create(pod("team-2", "team"))
        api.create(pod("other-2", "other"))
        wait_until(lambda: "team/team-2" in sink.names(), what="the new Pod")
        api.delete("Pod", "team-1", "team")
        wait_until(lambda: sink.deleted, what="the deletion")
        assert sink.names() == {"team/team-1", "team/team-2"} and "team-1" in sink.deleted
    finally:
        watch.stop()
    assert not watch.alive


def test_dry_run_namespaces_only_when_asked(api, start):
    watch, sink = start(values=("enforce", "dry-run"))
    try:
        wait_until(lambda: sink.names() == {"team/team-1", "trial/trial-1"}, what="both namespaces listed")
    finally:
        watch.stop()


def test_a_namespace_labelled_later_has_its_pods_listed_at_once(api, start):
    watch, sink = start()
    try:
        wait_until(lambda: sink.names(), what="the first listing")
        api.patch("Namespace", "other", {"metadata": {"labels": {LABEL: "enforce"}}})
        wait_until(lambda: ("other/other-1", False) in sink.seen, what="the Pods of the newly labelled namespace")
    finally:
        watch.stop()


def test_lists_again_when_the_watch_history_is_gone(api, start):
    watch, sink = start(watch_seconds=1)
    try:
        wait_until(lambda: sink.seen, what="the first listing")
        lists = lambda: len([r for r in api.requests_to("GET", "/api/v1/pods") if "watch" not in r.query])  # noqa: E731
        assert lists() == 1
        api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bump", "namespace": "team"}})
        api.compact()  # the history now starts after the version the watch resumes from
        wait_until(lambda: lists() == 2, what="a new listing after 410 Gone")
        wait_until(
            lambda: [name for name, complete in sink.seen if complete].count("team/team-1") == 2, what="relisted"
        )
    finally:
        watch.stop()


def test_an_api_server_error_is_retried_with_a_new_listing(api, start):
    api.fail_next(500, method="GET", path_contains="/api/v1/pods")
    watch, sink = start(retry_seconds=0.05)
    try:
        wait_until(lambda: ("team/team-1", True) in sink.seen, what="the listing after the error")
    finally:
        watch.stop()
