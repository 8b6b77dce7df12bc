"""The one informer against the fake API server through the real kubernetes client: handlers, bookmarks, 410,
errors, stop; and a warmer that leads and runs retention lists and watches Pods once."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from tests.support.waiting import wait_until
from tests.support.warmer_scene import pod, warm_scene
from webhook.kube.informer import Informer
from webhook.testing.apiserver import LocalAPIServer

pytestmark = pytest.mark.integration
LABEL = "ccr-webhook/policy"


class Recorder:
    """A handler that records every listing and event it is told."""

    def __init__(self):
        self.listings: list[set[str]] = []
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def listed(self, objects):
        with self.lock:
            self.listings.append({o["metadata"]["name"] for o in objects})

    def changed(self, event_type, obj):
        with self.lock:
            self.events.append((event_type, obj["metadata"]["name"]))


def namespace(name, policy=None):
    labels = {LABEL: policy} if policy else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


@pytest.fixture
def api():
    with LocalAPIServer() as server:
        yield server


@pytest.fixture
def informers(api):
    """Makes informers over the fake server's namespaces; stops them at the end."""
    made = []

    def make(**options):
        core = client.CoreV1Api(api.api_client())
        informer = Informer(core.list_namespace, kind="Namespace", api_version="v1", **options)
        made.append(informer)
        return informer

    yield make
    for informer in made:
        informer.stop()


def lists(api):
    return len([r for r in api.requests_to("GET", "/api/v1/namespaces") if "watch" not in r.query])


def test_nothing_is_listed_or_watched_until_a_handler_joins_and_a_joining_handler_gets_a_full_listing(api, informers):
    api.create(namespace("a"))
    informer = informers(watch_seconds=1).start()
    first, second = Recorder(), Recorder()
    informer.add_handler(first)
    wait_until(lambda: first.listings == [{"a"}], what="the first listing")
    assert lists(api) == 1  # none before the handler came
    api.create(namespace("b"))
    wait_until(lambda: ("ADDED", "b") in first.events, what="the watch event")
    informer.add_handler(second)
    wait_until(lambda: second.listings == [{"a", "b"}], what="the listing for the second handler")
    assert first.listings[-1] == {"a", "b"} and lists(api) == 2


def test_a_namespace_that_loses_the_selected_label_leaves_as_deleted(api, informers):
    api.create(namespace("team", "enforce"))
    recorder = Recorder()
    informer = informers(label_selector=f"{LABEL} in (enforce)", watch_seconds=5)
    informer.add_handler(recorder)
    informer.start()
    wait_until(lambda: recorder.listings == [{"team"}], what="the listing")
    api.patch("Namespace", "team", {"metadata": {"labels": {LABEL: "off"}}})
    wait_until(lambda: recorder.events, what="an event")
    api.patch("Namespace", "team", {"metadata": {"labels": {LABEL: "enforce"}}})
    wait_until(lambda: len(recorder.events) == 2, what="a second event")
    assert recorder.events == [("DELETED", "team"), ("ADDED", "team")]


def test_bookmarks_keep_a_selective_watch_current_so_compaction_needs_no_new_listing(api, informers):
    api.bookmark_seconds = 0.2
    recorder = Recorder()
    informer = informers(label_selector=f"{LABEL} in (enforce)", watch_seconds=1)
    informer.add_handler(recorder)
    informer.start()
    wait_until(lambda: recorder.listings, what="the listing")
    for index in range(5):  # changes the watch filters out: only a bookmark moves its version past them
        api.create(namespace(f"other-{index}"))
    wait_until(
        lambda: any(
            int(r.query.get("resourceVersion", 0)) >= api.resource_version
            for r in api.requests_to("GET", "/api/v1/namespaces")
            if "watch" in r.query
        ),
        what="a watch resumed from a bookmark's version",
    )
    api.compact()
    api.create(namespace("team", "enforce"))
    wait_until(lambda: ("ADDED", "team") in recorder.events, what="the event after compaction")
    assert lists(api) == 1


def test_410_gone_lists_again_and_an_error_is_retried_after_a_backoff(api, informers):
    api.create(namespace("first"))
    recorder = Recorder()
    informer = informers(watch_seconds=1, retry_seconds=0.05)
    informer.add_handler(recorder)
    informer.start()
    wait_until(lambda: recorder.listings, what="the listing")
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bump", "namespace": "default"}})
    api.compact()  # the history now starts after the version the watch resumes from
    wait_until(lambda: lists(api) == 2, what="a new listing after 410 Gone")
    api.fail_next(500, method="GET", path_contains="/api/v1/namespaces", times=3)
    api.compact()
    api.create(namespace("after"))
    wait_until(lambda: {"after"} <= recorder.listings[-1], what="a listing after the errors")
    assert informer.alive


def test_a_failing_handler_neither_stops_the_others_nor_the_loop(api, informers):
    class Broken(Recorder):
        def changed(self, event_type, obj):
            raise RuntimeError("a bug in a handler")

    recorder = Recorder()
    informer = informers(watch_seconds=1)
    informer.add_handler(Broken())
    informer.add_handler(recorder)
    informer.start()
    wait_until(lambda: recorder.listings, what="the listing")
    api.create(namespace("a"))
    api.create(namespace("b"))
    wait_until(lambda: recorder.events == [("ADDED", "a"), ("ADDED", "b")], what="both events")
    assert informer.alive


def test_stop_cuts_an_open_watch_short(api, informers):
    informer = informers(watch_seconds=300)
    informer.add_handler(Recorder())
    informer.start()
    wait_until(lambda: api.open_watches("/api/v1/namespaces"), what="the watch open")
    started = time.monotonic()
    informer.stop(timeout=30)
    assert not informer.alive and time.monotonic() - started < 10  # not the watch's 300 s


def test_a_leading_warmer_with_retention_lists_and_watches_pods_once(tmp_path):
    with warm_scene(tmp_path) as scene:
        scene.api.create(pod("app", scene.tagged))
        warmer = scene.start_warmer(retention={"enabled": True})
        wait_until(scene.in_ccr, what="the leader's warm of the listed Pod")
        wait_until(lambda: warmer.retention.usage.wait_synced(0), what="retention's usage listed")
        wait_until(lambda: scene.api.open_watches("/api/v1/pods") == 1, what="one Pod watch (two parts, one informer)")
        assert warmer.election.leading
