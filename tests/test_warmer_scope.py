"""Issue 13 item 15, the warmer's side: only Pods of namespaces the webhook acts on make it contact an upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.waiting import wait_until
from tests.support.warmer_scene import POLICY_LABEL, Scene, labelled_namespace, pod, warm_scene

pytestmark = pytest.mark.integration


@pytest.fixture
def scene(tmp_path) -> Iterator[Scene]:
    with warm_scene(tmp_path) as running:
        yield running


def asked_for(scene: Scene, tag: str) -> list[str]:
    """The upstream requests that name `tag`."""
    return [path for _, path, _ in scene.proxy.requests if path.endswith(f"/manifests/{tag}")]


def test_a_pod_in_a_namespace_the_webhook_does_not_act_on_causes_no_upstream_request(scene):
    scene.api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}})
    scene.api.create(labelled_namespace("trial", "dry-run"))  # warmDryRunNamespaces is off
    scene.api.create(labelled_namespace("leaving", "enforce"))
    warmer = scene.start_warmer()
    wait_until(lambda: warmer.election.leading, what="the Lease")
    leaving_pod = pod("probe", "x", namespace="leaving")
    wait_until(lambda: warmer._watch is not None and warmer._watch.watches(leaving_pod), what="the namespaces known")
    scene.api.patch("Namespace", "leaving", {"metadata": {"labels": {POLICY_LABEL: "off"}}})
    wait_until(lambda: not warmer._watch.watches(leaving_pod), what="the unlabelled namespace dropped")
    for namespace in ("elsewhere", "trial", "leaving"):
        scene.api.create(pod("app", f"{scene.upstream_host}/team/app:{namespace}", namespace=namespace))
    scene.api.create(pod("app", scene.tagged))  # in the scene's enforce namespace, after the others: handled after them
    wait_until(scene.in_ccr, what="the Pod in an enforce namespace warmed")
    assert [tag for tag in ("elsewhere", "trial", "leaving") if asked_for(scene, tag)] == []
