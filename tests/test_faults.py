"""Faults against the real servers, each with its documented outcome (docs/reliability.md maps every fault to its test).

Admission answers within its deadline with the configured behaviour (`onResolveError`), whatever the upstream or
the CCR does; the warmer never makes a half-copied image visible and finishes the copy once the fault passes; a
worker killed under load fails only the requests it held; a renewed certificate is served without a failed request.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3

from tests.support import small_disk
from tests.support.faulty_servers import SilentServer, corrupt_blob
from tests.support.https_load import HTTPSLoad, Outcome
from tests.support.registry_proxy import DROP, RegistryProxy
from tests.support.waiting import wait_until
from tests.support.warmer_scene import Scene, warm_scene
from webhook import tls
from webhook.registry.client import NotFound, RegistryClient
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.sample_image import PushedImage, push_sample_image
from webhook.testing.webhook_process import LocalWebhook
from webhook.warmer.service import Warmer

pytestmark = pytest.mark.integration

DEADLINE = 1.0
SLACK = 0.5  # what "answered before the deadline" allows for scheduling and the round trip


@dataclass
class Upstream:
    """A real registry holding team/app:1.0, behind a fault-injecting proxy that the webhook calls the upstream."""

    registry: RegistryServer
    front: RegistryProxy
    image: PushedImage
    client: RegistryClient

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.front.port}"

    def tag(self, tag: str) -> str:
        """Put team/app:1.0's manifest under `tag` too; the image reference naming it through the proxy."""
        manifest = self.client.get_manifest("team/app", "1.0")
        self.client.put_manifest("team/app", tag, manifest.data, manifest.media_type)
        return f"{self.host}/team/app:{tag}"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with RegistryServer() as registry:
        client = RegistryClient(registry.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=4)
        image = push_sample_image(client, "team/app", "1.0", [512], seed=21)
        front = RegistryProxy(registry.host).start()
        try:
            yield Upstream(registry, front, image, client)
        finally:
            front.stop()


@pytest.fixture(scope="module")
def ccr() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def settings(upstream: Upstream, ccr_endpoint: str, on_resolve_error: str = "allow") -> dict:
    """The webhook's configuration: the proxied upstream, the CCR at `ccr_endpoint`, short negative caching, no warmer."""
    return {
        "ccr": {"registry": "ccr.local:5000", "endpoint": ccr_endpoint, "insecure": True},
        "upstreams": [{"registry": upstream.host, "endpoint": upstream.front.url, "insecure": True, "prefix": "up"}],
        "policy": {"swap": "exists", "onResolveError": on_resolve_error},  # a held tag is pinned upstream
        "resolver": {"negativeCacheSeconds": 0.2, "connectTimeoutSeconds": 0.5, "readTimeoutSeconds": 2 * DEADLINE},
        "webhook": {"deadlineSeconds": DEADLINE, "warmerUrl": ""},
    }


@pytest.fixture(scope="module")
def hooks(upstream, ccr) -> Iterator[dict[str, LocalWebhook]]:
    """One single-worker webhook per onResolveError policy (one worker: one resolver cache, so counts are exact)."""
    with (
        LocalWebhook(settings(upstream, ccr.url, "allow"), workers=1) as allow,
        LocalWebhook(settings(upstream, ccr.url, "deny"), workers=1) as deny,
    ):
        yield {"allow": allow, "deny": deny}


def review_body(image: str, uid: str = "uid-fault") -> bytes:
    """An AdmissionReview creating a one-container Pod running `image`."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": uid, "operation": "CREATE", "object": pod},
        }
    ).encode()


def answer(hook: LocalWebhook, image: str) -> dict:
    """The review's response, asserted to come back as an AdmissionReview before the deadline (plus slack)."""
    client = urllib3.HTTPSConnectionPool(
        "127.0.0.1", hook.port, cert_reqs="CERT_REQUIRED", ca_certs=str(hook.ca_file), timeout=10, retries=False
    )
    started = time.monotonic()
    reply = client.request("POST", "/mutate", body=review_body(image), headers={"Content-Type": "application/json"})
    elapsed = time.monotonic() - started
    assert reply.status == 200 and elapsed < DEADLINE + SLACK, (reply.status, elapsed, reply.data[:300])
    return json.loads(reply.data)["response"]


def new_image(response: dict) -> str | None:
    """The image the answer's patch puts in the container, if it patches it."""
    ops = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    return next((op["value"] for op in ops if op["path"] == "/spec/containers/0/image"), None)


# -- upstream faults at admission -------------------------------------------------------------------------

# fault -> (what the proxy answers instead of the registry, the cause the answer names). 404 is the registry's own.
UPSTREAM_FAULTS: dict[str, tuple[list[tuple[int, dict[str, str]]], str]] = {
    "401": (
        [(401, {"WWW-Authenticate": 'Basic realm="registry"'})],
        "requires Basic credentials and none are configured",
    ),
    "404": ([], "not found"),
    "429": ([(429, {"Retry-After": "1"})], "rate limited, HTTP 429; retry after 1 s"),
    "500": ([(500, {})], "registry error, HTTP 500"),
    "dropped mid-response": ([(DROP, {}), (DROP, {})], "connection dropped"),  # the HEAD, then the GET after it
}


@pytest.mark.parametrize("policy", ["allow", "deny"])
@pytest.mark.parametrize("fault", sorted(UPSTREAM_FAULTS))
def test_an_upstream_fault_is_answered_in_time_by_policy_and_the_tag_is_pinned_once_it_passes(
    hooks, upstream, fault, policy
):
    answers, cause = UPSTREAM_FAULTS[fault]
    tag = f"{fault.split()[0]}-{policy}"
    image = f"{upstream.host}/team/app:{tag}" if fault == "404" else upstream.tag(tag)
    upstream.front.faults[:] = answers
    response = answer(hooks[policy], image)
    if policy == "allow":
        assert response["allowed"] and "patch" not in response
        [warning] = response["warnings"]
        assert f"cannot resolve {image} to a digest" in warning and cause in warning and "admitted unpinned" in warning
    else:
        assert not response["allowed"] and response["status"]["code"] == 403
        assert (
            cause in response["status"]["message"] and "policy.onResolveError is deny" in response["status"]["message"]
        )
    if fault == "404":
        upstream.tag(tag)  # the missing tag gets pushed
    pinned = f"{image}@{upstream.image.digest}"
    wait_until(
        lambda: new_image(answer(hooks[policy], image)) == pinned, timeout=10, what="the tag pinned after the fault"
    )


def test_a_rate_limited_upstream_is_not_asked_again_before_its_retry_after(hooks, upstream):
    image = upstream.tag("retry-after")
    upstream.front.faults[:] = [(429, {"Retry-After": "2"})]
    asked = len(upstream.front.requests)
    first = answer(hooks["allow"], image)
    second = answer(hooks["allow"], image)
    assert len(upstream.front.requests) == asked + 1, "asked once, then answered from the cache for Retry-After"
    assert "retry after 2 s" in first["warnings"][0] and second["warnings"] == first["warnings"]
    wait_until(lambda: new_image(answer(hooks["allow"], image)) is not None, timeout=10, what="the tag pinned after it")


# -- the CCR down at admission ------------------------------------------------------------------------------


@pytest.mark.parametrize("ccr_state", ["refusing connections", "silent"])
def test_with_the_ccr_down_images_are_pinned_upstream_in_time(upstream, ccr_state):
    silent = SilentServer()
    try:
        endpoint = f"http://{silent.host}" if ccr_state == "silent" else f"http://127.0.0.1:{free_port()}"
        with LocalWebhook(settings(upstream, endpoint), workers=1) as hook:
            response = answer(hook, upstream.tag("ccr-down"))
    finally:
        silent.close()
    assert response["allowed"] and "warnings" not in response
    assert new_image(response) == f"{upstream.host}/team/app:ccr-down@{upstream.image.digest}"


# -- the warmer: faults that pass -------------------------------------------------------------------------


@dataclass(frozen=True)
class PassingFault:
    """A fault the warmer meets mid-copy: how to cause it, how it ends, and the cause its failed attempts name."""

    ccr: Callable[[], RegistryServer | None]
    cause: Callable[[Scene], None]
    repair: Callable[[Scene], None]
    names: str


def _set_truncation(on: bool) -> Callable[[Scene], None]:
    def apply(scene: Scene) -> None:
        scene.proxy.truncate_blobs = on

    return apply


PASSING_FAULTS = {
    # the CCR's volume is 128 KiB (the image has a 200 kB layer) until it is expanded: the registry's real ENOSPC
    "ccr disk full": PassingFault(
        lambda: small_disk.SmallDiskRegistry(128 * 1024),
        lambda scene: None,
        lambda scene: scene.ccr.grow(64 * 1024 * 1024),
        "no space left on device",
    ),
    "upstream drops blob downloads midway": PassingFault(
        lambda: None, _set_truncation(True), _set_truncation(False), "download broke after"
    ),
}


def hint(warmer: Warmer, scene: Scene, wait: float = 0) -> dict:
    """Hint the scene's image to `warmer`; the one result."""
    response = urllib3.request(
        "POST",
        f"http://127.0.0.1:{warmer.hint_server.port}/hints?wait={wait}",
        body=json.dumps({"requests": [{"source": scene.source, "target": scene.target}]}),
        timeout=wait + 10,
    )
    assert response.status == 200, response.data
    [result] = json.loads(response.data)["results"]
    return result


def job_error(warmer: Warmer) -> str | None:
    """The last error of the warmer's job, while it retries or once it failed."""
    return next((job.error for job in warmer.queue.jobs() if job.error), None)


def tagged_in_ccr(scene: Scene) -> bool:
    """Whether the CCR's tag names the scene's image: the last step of a copy (blobs, manifest by digest, tag)."""
    try:
        return scene.ccr_client().resolve_digest("mirror/team/app", "1.0") == scene.image.digest
    except NotFound:
        return False


@pytest.mark.parametrize("fault", sorted(PASSING_FAULTS))
def test_the_warmer_shows_nothing_half_copied_while_a_fault_lasts_and_finishes_once_it_passes(tmp_path, fault):
    chosen = PASSING_FAULTS[fault]
    if fault == "ccr disk full" and not small_disk.supported():
        pytest.skip("this machine does not let a process mount a tmpfs in a mount namespace of its own")
    with warm_scene(tmp_path, chosen.ccr()) as scene:
        chosen.cause(scene)
        warmer = scene.start_warmer(warmer={"maxAttempts": 100})
        assert hint(warmer, scene)["state"] in ("queued", "running")
        wait_until(lambda: chosen.names in (job_error(warmer) or ""), timeout=30, what="a copy attempt failing for it")
        assert not scene.in_ccr()
        assert not scene.ccr_client().has_manifest("mirror/team/app", scene.image.digest)
        chosen.repair(scene)
        wait_until(lambda: tagged_in_ccr(scene), timeout=30, what="the copy finished after the fault passed")
        client = scene.ccr_client()
        assert all(client.blob_size("mirror/team/app", blob) for blob in scene.image.blobs)


def test_a_blob_corrupted_upstream_is_never_copied_and_a_later_sighting_copies_it_once_repaired(tmp_path):
    with warm_scene(tmp_path) as scene:
        layer = scene.image.blobs[0]
        corrupt_blob(scene.upstream, layer)
        warmer = scene.start_warmer()
        failed = hint(warmer, scene, wait=20)
        assert failed["state"] == "failed" and "the served bytes have digest" in failed["reason"]
        client = scene.ccr_client()
        assert not client.has_manifest("mirror/team/app", scene.image.digest)
        assert client.blob_size("mirror/team/app", layer) is None
        corrupt_blob(scene.upstream, layer)  # flipped back: the upstream is repaired
        assert hint(warmer, scene, wait=20)["state"] == "done" and scene.in_ccr()


# -- the webhook server under load ------------------------------------------------------------------------


def _reaped(pid: int) -> bool:
    """Whether process `pid` is gone, reaped by its parent: every thread has exited, so every socket is closed."""
    return not Path(f"/proc/{pid}").exists()


def _each_thread_has(count: int, since: float = 0.0, ok: Callable[[Outcome], bool] = lambda o: o.ok):
    return lambda per_thread: all(
        sum(1 for o in outcomes if o.started > since and ok(o)) >= count for outcomes in per_thread
    )


def test_a_worker_killed_under_load_fails_only_the_requests_it_held(upstream, ccr, capsys):
    image = upstream.tag("under-load")
    with LocalWebhook(settings(upstream, ccr.url), workers=2) as hook:
        with HTTPSLoad(hook.port, hook.client_ssl_context(), "/mutate", review_body(image), threads=6) as load:
            assert load.wait_until(_each_thread_has(5)), "the load is running"
            master, victim, *_ = hook.pids()
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: _reaped(victim), timeout=10, what="the worker's death")
            dead = time.monotonic()
            wait_until(lambda: len(hook.pids()) == 3 and victim not in hook.pids(), timeout=30, what="a new worker")
            assert load.wait_until(_each_thread_has(20, since=dead), timeout=60), "the load goes on after the kill"
        outcomes = load.all()
    failed = [o for o in outcomes if not o.ok]
    held = [o for o in outcomes if o.started < dead and o.ended > killed]  # in flight, or queued, at the kill
    assert all(o.started < dead and o.ended > killed for o in failed), [
        (round(o.started - killed, 3), round(o.ended - killed, 3), round(dead - killed, 3), o.status, o.error)
        for o in failed
    ]
    assert all(o.ended - o.started < DEADLINE + SLACK for o in outcomes if o.ok)
    with capsys.disabled():
        print(
            f"\nworker killed under load: {len(failed)} failed of {len(held)} in flight at the kill, "
            f"{len(outcomes)} requests in all"
        )


def test_a_certificate_renewed_under_load_is_served_without_a_failed_request(upstream, ccr, tmp_path):
    with LocalWebhook(settings(upstream, ccr.url), workers=2) as hook:
        old = tls.describe_certificate((hook.workdir / "tls.crt").read_bytes()).serial
        new_ca = tls.generate_ca("ccr-webhook renewed CA")
        bundle = hook.ca_file.read_bytes() + new_ca.cert_pem  # the clients trust both, as a caBundle in rotation does
        (tmp_path / "bundle.pem").write_bytes(bundle)
        context = ssl.create_default_context(cafile=str(tmp_path / "bundle.pem"))
        renewed = tls.issue_serving_cert(new_ca, ["localhost"], ["127.0.0.1"])
        new = tls.describe_certificate(renewed.cert_pem).serial
        body = review_body(upstream.tag("renewal"))
        with HTTPSLoad(hook.port, context, "/mutate", body, threads=4) as load:
            assert load.wait_until(_each_thread_has(5, ok=lambda o: o.serial == old)), "served the first certificate"
            tls.write_serving_files(hook.workdir, tls.TLSMaterial(new_ca, bundle, renewed))
            assert load.wait_until(_each_thread_has(5, ok=lambda o: o.serial == new)), "served the renewed certificate"
    for outcomes in load.outcomes:
        assert all(o.ok and o.ended - o.started < DEADLINE + SLACK for o in outcomes)
        serials = [o.serial for o in outcomes]
        first_new = serials.index(new)
        assert set(serials[:first_new]) == {old} and set(serials[first_new:]) == {new}  # never back to the old one
