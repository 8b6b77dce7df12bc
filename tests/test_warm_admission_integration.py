"""Warming through admission: the real webhook server (gunicorn over TLS) hinting a warmer, real registries, the
fake API server. The policies end to end: swap exists and always, copy force, dryRun reviews, dry-run namespaces."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import urllib3

from tests.support.waiting import wait_until
from tests.support.warmer_scene import Scene, warm_scene
from webhook.testing.webhook_process import LocalWebhook
from webhook.warmer.service import Warmer

pytestmark = pytest.mark.integration


@pytest.fixture
def scene(tmp_path) -> Iterator[Scene]:
    with warm_scene(tmp_path) as running:
        yield running


@contextmanager
def webhook_and_warmer(scene: Scene, **sections) -> Iterator[tuple[LocalWebhook, Warmer]]:
    """A warmer in process and a webhook server hinting it, both configured with `sections`."""
    warmer = scene.start_warmer(**sections)
    settings = scene.settings(**sections)
    # A generous deadline unless a test sets one: a loaded test machine must not turn a pin into "unpinned".
    settings["webhook"] = {
        "deadlineSeconds": 10,
        **settings.get("webhook", {}),
        "warmerUrl": f"http://127.0.0.1:{warmer.hint_server.port}",
    }
    with LocalWebhook(settings, workers=1) as hook:
        yield hook, warmer


def admit(hook: LocalWebhook, image: str, path: str = "/mutate", uid: str = "uid", dry_run: bool = False) -> dict:
    """The image the webhook answers for a one-container Pod (its patched value, or the image unchanged)."""
    response = answer(hook, image, path, uid, dry_run)
    ops = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    return next((op["value"] for op in ops if op["path"] == "/spec/containers/0/image"), image)


def answer(hook: LocalWebhook, image: str, path: str = "/mutate", uid: str = "uid", dry_run: bool = False) -> dict:
    """The webhook's answer (the AdmissionReview response) for a one-container Pod running `image`."""
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "operation": "CREATE",
            "dryRun": dry_run,
            "namespace": "team",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "team"},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    }
    client = urllib3.HTTPSConnectionPool(
        "127.0.0.1", hook.port, cert_reqs="CERT_REQUIRED", ca_certs=str(hook.ca_file), timeout=30, retries=False
    )
    reply = client.request("POST", path, body=json.dumps(review), headers={"Content-Type": "application/json"})
    assert reply.status == 200, reply.data
    response = json.loads(reply.data)["response"]
    assert response["allowed"], response
    return response


def hints_taken(warmer: Warmer) -> float:
    return warmer.metrics.hints.labels("accepted")._value.get()


EXISTS = {"swap": "exists"}  # upstream until the CCR holds the image (the default is always)


def test_swap_exists_pins_upstream_then_warms_then_rewrites_the_next_pod(scene):
    with webhook_and_warmer(scene, policy=EXISTS) as (hook, _):
        assert admit(hook, scene.tagged) == scene.source  # the CCR lacks it: pinned upstream, hinted
        wait_until(scene.in_ccr, what="the warm")
        wait_until(lambda: admit(hook, scene.tagged, uid="next") == scene.target, what="the next Pod rewritten")


def test_dry_run_reviews_and_dry_run_namespaces_send_no_hint(scene):
    with webhook_and_warmer(scene, policy=EXISTS) as (hook, warmer):
        assert admit(hook, scene.tagged, dry_run=True) == scene.source  # answered, but no side effect
        assert admit(hook, scene.tagged, path="/dry-run", uid="dry-ns") == scene.tagged  # dry-run mode changes nothing
        other = f"{scene.upstream_host}/team/other:1.0@{scene.image.digest}"
        admit(hook, other, uid="last")  # hints go out in order: once this one is in, the others would be too
        wait_until(lambda: hints_taken(warmer) >= 1, what="the last hint")
        assert hints_taken(warmer) == 1 and not scene.in_ccr()


def test_dry_run_namespaces_are_warmed_when_opted_in(scene):
    with webhook_and_warmer(scene, warmer={"warmDryRunNamespaces": True}) as (hook, _):
        assert admit(hook, scene.tagged, path="/dry-run") == scene.tagged
        wait_until(scene.in_ccr, what="the warm of a dry-run namespace's image")


def test_swap_always_rewrites_at_once_and_the_warm_follows(scene):
    with webhook_and_warmer(scene, policy={"swap": "always"}) as (hook, _):
        assert admit(hook, scene.tagged) == scene.target
        wait_until(scene.in_ccr, what="the warm")


def test_the_default_policy_asks_the_ccr_and_warns_of_a_cold_image_until_it_is_held(scene):
    with webhook_and_warmer(scene) as (hook, _):  # swap: always, and the CCR is asked all the same
        first = answer(hook, scene.tagged)
        assert any("not in the CCR yet" in warning for warning in first.get("warnings", [])), first
        wait_until(scene.in_ccr, what="the warm")
        held = wait_until(
            lambda: (found := answer(hook, scene.tagged, uid="held")) and not found.get("warnings") and found,
            what="an answer without the warning once the CCR holds the image",
        )
        assert json.loads(base64.b64decode(held["patch"]))[0]["value"] == scene.target


def test_copy_force_rewrites_within_the_deadline_when_the_copy_is_fast(scene):
    with webhook_and_warmer(scene, policy={"copy": "force"}) as (hook, _):
        assert admit(hook, scene.tagged) == scene.target
        assert scene.in_ccr()  # in the CCR before the answer came


def test_copy_force_answers_as_delayed_when_the_copy_is_slow_and_the_copy_goes_on(scene):
    scene.proxy.blob_delay_seconds = 3
    with webhook_and_warmer(scene, policy={**EXISTS, "copy": "force"}, webhook={"deadlineSeconds": 1}) as (hook, _):
        assert admit(hook, scene.tagged) == scene.source
        wait_until(scene.in_ccr, what="the copy finishing after the answer")


def test_copy_none_never_copies(scene):
    with webhook_and_warmer(scene, policy={**EXISTS, "copy": "none"}) as (hook, warmer):
        assert admit(hook, scene.tagged) == scene.source
        assert admit(hook, scene.tagged, uid="again") == scene.source
        assert warmer.metrics.hints.labels("rejected")._value.get() == 0 and hints_taken(warmer) == 0
        assert not scene.in_ccr() and scene.blob_downloads().total() == 0
