"""The warmer against real registries and the fake API server (the real kubernetes client): hints, the Pod
watch, a crash mid-copy, two replicas and their Lease, forged hints, Events."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support.registry_proxy import RegistryProxy
from tests.support.waiting import wait_until
from tests.support.warmer_scene import NAMESPACE, Scene, pod, post_hints, warm_scene
from webhook.registry.errors import RegistryError
from webhook.testing.processes import RegistryServer
from webhook.testing.warmer_process import LocalWarmer
from webhook.version import VERSION
from webhook.warmer.events import FINISHED, PROGRESS, STARTED

pytestmark = pytest.mark.integration


@pytest.fixture
def scene(tmp_path) -> Iterator[Scene]:
    with warm_scene(tmp_path) as running:
        yield running


@pytest.fixture
def run_warmer(scene):
    return scene.start_warmer


def test_concurrent_hints_for_one_image_make_one_copy(scene, run_warmer):
    warmer = run_warmer()
    results: list[dict] = []
    hint = {"source": scene.source, "target": scene.target}
    threads = [threading.Thread(target=lambda: results.extend(post_hints(warmer, [hint], wait=20))) for _ in range(8)]
    scene.proxy.blob_delay_seconds = 0.3  # so the hints overlap the copy
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {result["state"] for result in results} <= {"done", "present"} and len(results) == 8
    assert scene.in_ccr()
    downloads = scene.blob_downloads()
    assert len(downloads) == 4 and set(downloads.values()) == {1}  # three layers and the config, each once


def test_the_log_is_json_with_the_version_first_and_the_copy_as_fields(scene):
    """The `ccr-webhook warmer` process: start-up line, the warm's sizes as fields, build_info, nothing else."""
    with LocalWarmer(scene.settings(), scene.kubeconfig, "logged") as warmer:
        [result] = warmer.hint([{"source": scene.source, "target": scene.target}], wait=20)
        assert result["state"] == "done"
        metrics = warmer.metrics().splitlines()
        wait_until(lambda: "warmed " in warmer.log(), what="the warm logged")
        lines = [json.loads(line) for line in warmer.log().splitlines()]  # every line one JSON object
    assert lines[0]["message"].startswith("starting ccr-webhook") and lines[0]["version"] == VERSION
    assert lines[0]["identity"] == "logged" and lines[0]["listen"] == f"127.0.0.1:{warmer.hint_port}"
    [warmed] = [line for line in lines if line["message"].startswith("warmed ")]
    assert warmed["image"] == scene.source and warmed["target"] == scene.target
    assert warmed["bytes_copied"] > 0 and warmed["blobs_copied"] == 4 and warmed["seconds"] > 0
    assert f'ccr_webhook_build_info{{version="{VERSION}"}} 1.0' in metrics


def test_one_wait_answers_every_tag_of_one_digest(scene, run_warmer):
    warmer = run_warmer()
    other_tag = scene.source.replace(":1.0@", ":1.0.0@")  # another tag, the same digest: one job
    scene.proxy.blob_delay_seconds = 0.3
    results = post_hints(warmer, [{"source": scene.source}, {"source": other_tag}], wait=20)
    assert [r["state"] for r in results] == ["done", "done"]
    assert results[1]["target"] == scene.target.replace(":1.0@", ":1.0.0@")


def test_a_pod_listed_at_start_is_warmed_with_no_hint_at_all(scene, run_warmer):
    created = scene.api.create(pod("app", scene.tagged))  # a tag: the warmer resolves it first
    warmer = run_warmer()
    wait_until(scene.in_ccr, what="the image in the CCR")
    assert warmer.metrics.hints.labels("accepted")._value.get() == 0
    events = wait_until(
        lambda: (found := scene.api.objects("Event", NAMESPACE)) and found[-1]["reason"] == FINISHED and found,
        what="the Event saying the warm finished",
    )
    # started, progress as the first blob bytes move (then at most every 10 s: once here), finished
    assert [(e["reason"], e["type"]) for e in events] == [
        (STARTED, "Normal"),
        (PROGRESS, "Normal"),
        (FINISHED, "Normal"),
    ]
    assert {e["involvedObject"]["uid"] for e in events} == {created["metadata"]["uid"]}
    assert re.fullmatch(r"CCR: pulling [0-9.]+ [kMG]?B from \S+, [0-9]+% done, .+", events[1]["message"])
    assert scene.target in events[2]["message"] and "copied in" in events[2]["message"]


def test_copy_none_never_copies(scene, run_warmer):
    scene.api.create(pod("app", scene.source))
    warmer = run_warmer(policy={"copy": "none"})
    (result,) = post_hints(warmer, [{"source": scene.source, "target": scene.target}], wait=1)
    assert result["state"] == "rejected" and "policy.copy is none" in result["reason"]
    wait_until(
        lambda: [r for r in scene.api.requests_to("GET", "/api/v1/pods") if "watch" in r.query],
        what="the Pod watch running",
    )
    assert not scene.in_ccr() and scene.blob_downloads() == Counter()


def test_a_forged_hint_makes_the_warmer_contact_no_other_registry(scene, run_warmer):
    with RegistryServer() as elsewhere:
        bait = RegistryProxy(elsewhere.host).start()
        try:
            warmer = run_warmer()
            forged_source = {
                "source": f"127.0.0.1:{bait.port}/team/app:1.0@{scene.image.digest}",
                "target": f"{scene.ccr.host}/mirror/team/app:1.0@{scene.image.digest}",
            }
            forged_target = {
                "source": scene.source,
                "target": f"127.0.0.1:{bait.port}/mirror/team/app@{scene.image.digest}",
            }
            results = post_hints(warmer, [forged_source, forged_target], wait=2)
            assert [r["state"] for r in results] == ["rejected", "rejected"]
            assert "not a configured upstream" in results[0]["reason"] and "is not" in results[1]["reason"]
            assert bait.requests == [] and not scene.in_ccr() and scene.blob_downloads() == Counter()
            assert warmer.metrics.hints.labels("rejected")._value.get() == 2
        finally:
            bait.stop()


def test_a_warmer_killed_mid_copy_finishes_from_the_pod_list_after_a_restart(scene):
    scene.api.create(pod("app", scene.tagged))
    scene.proxy.blob_delay_seconds = 1.0
    manifest_before_blobs: list[str] = []
    watching = threading.Event()

    def check_consistency() -> None:  # the CCR must never show the manifest before every blob is there
        client = scene.ccr_client()
        while not watching.is_set():
            try:
                if client.has_manifest("mirror/team/app", scene.image.digest):
                    missing = [b for b in scene.image.blobs if client.blob_size("mirror/team/app", b) is None]
                    if missing:
                        manifest_before_blobs.append(", ".join(missing))
            except RegistryError:  # the registry answers 500 now and then while a manifest is being written
                pass
            watching.wait(0.02)

    checker = threading.Thread(target=check_consistency)
    checker.start()
    first = LocalWarmer(scene.settings(), scene.kubeconfig, "first").start()
    try:
        wait_until(scene.blob_downloads, what="the copy under way")
        first.kill()
        assert not scene.in_ccr()
        scene.proxy.blob_delay_seconds = 0.1
        second = LocalWarmer(scene.settings(), scene.kubeconfig, "second").start()
        try:
            wait_until(scene.in_ccr, timeout=30, what="the copy finished by the restarted warmer")
            wait_until(
                lambda: 'ccr_webhook_warms_total{result="done"} 1.0' in second.metrics(), what="the warm counted"
            )
        finally:
            second.cleanup()
    finally:
        watching.set()
        checker.join()
        first.cleanup()
    assert manifest_before_blobs == []


def test_two_warmers_one_leader_watches_and_the_other_takes_over_when_it_dies(scene):
    warmers = [LocalWarmer(scene.settings(), scene.kubeconfig, name).start() for name in ("one", "two")]
    try:

        def holder() -> str | None:
            lease = scene.api.get("Lease", "ccr-webhook-warmer", "ccr-system")
            return lease and lease["spec"].get("holderIdentity")

        leader_name = wait_until(holder, what="a leader")
        leader, other = sorted(warmers, key=lambda w: w.identity != leader_name)
        assert (
            "ccr_webhook_warmer_leader 1.0" in leader.metrics() and "ccr_webhook_warmer_leader 0.0" in other.metrics()
        )
        leader.kill()
        wait_until(lambda: holder() == other.identity, what="the other warmer taking the Lease over")
        scene.api.create(pod("after", scene.tagged))  # only a watching leader can find this one
        wait_until(scene.in_ccr, what="the new leader warming the Pod's image")
        assert "ccr_webhook_warmer_leader 1.0" in other.metrics()
        assert other.terminate() == 0
        assert holder() is None  # released on SIGTERM
    finally:
        for warmer in warmers:
            warmer.cleanup()


def test_an_image_retention_evicts_is_copied_again_on_the_next_sighting(scene, run_warmer):
    warmer = run_warmer(retention={"enabled": True, "maxUnusedAge": "0s", "keepNewest": 0})
    hint = {"source": scene.source, "target": scene.target}
    assert post_hints(warmer, [hint], wait=20)[0]["state"] == "done"
    wait_until(lambda: warmer.election.leading, timeout=10)
    wait_until(lambda: warmer.retention.run_once() is not None, timeout=10)  # once usage is listed
    assert not scene.in_ccr()  # no Pod uses it: evicted through the registry API
    assert post_hints(warmer, [hint], wait=20)[0]["state"] == "done"  # not "remembered as done": copied again
    assert scene.in_ccr()
    # the blobs outlive the manifest until the registry's own garbage collection: only manifests went again
    assert set(scene.blob_downloads().values()) == {1}
