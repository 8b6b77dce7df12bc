"""Faults the webhook server meets, each with its documented outcome (docs/reliability.md maps faults to tests).

Admission answers within its deadline with the configured behaviour (`onResolveError`), whatever the upstream or
the CCR does; a worker killed under load fails only the requests it held; a renewed certificate is served without
a failed request. The warmer's faults are in test_warmer_faults.py.
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

from tests.support.faulty_servers import SilentServer
from tests.support.https_load import HTTPSLoad, Outcome
from tests.support.registry_proxy import DROP, RegistryProxy
from tests.support.waiting import deadline_ceiling, wait_until
from webhook import tls
from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.sample_image import PushedImage, push_sample_image
from webhook.testing.webhook_process import LocalWebhook

pytestmark = pytest.mark.integration

DEADLINE = 1.0
ANSWERED_WITHIN = deadline_ceiling(DEADLINE)  # "answered by the deadline", generous for a loaded CI
READ_TIMEOUT = ANSWERED_WITHIN + 1  # above it: an answer that waited for a silent registry's read timeout fails


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


def settings(upstream: Upstream, ccr_endpoint: str, on_resolve_error: str = "allow") -> dict:
    """The webhook's configuration: the proxied upstream, the CCR at `ccr_endpoint`, short negative cache, no warmer."""
    return {
        "ccr": {"registry": "ccr.local:5000", "endpoint": ccr_endpoint, "insecure": True},
        "upstreams": [{"registry": upstream.host, "endpoint": upstream.front.url, "insecure": True, "prefix": "up"}],
        "policy": {"swap": "exists", "onResolveError": on_resolve_error},  # a held tag is pinned upstream
        "resolver": {"negativeCacheSeconds": 0.2, "connectTimeoutSeconds": 0.5, "readTimeoutSeconds": READ_TIMEOUT},
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
    """The review's response, asserted to come back as an AdmissionReview by the deadline (with a generous margin)."""
    client = urllib3.HTTPSConnectionPool(
        "127.0.0.1", hook.port, cert_reqs="CERT_REQUIRED", ca_certs=str(hook.ca_file), timeout=10, retries=False
    )
    started = time.monotonic()
    reply = client.request("POST", "/mutate", body=review_body(image), headers={"Content-Type": "application/json"})
    elapsed = time.monotonic() - started
    assert reply.status == 200 and elapsed < ANSWERED_WITHIN, (reply.status, elapsed, reply.data[:300])
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
            _, victim, *_ = hook.pids()
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
    assert all(o.ended - o.started < ANSWERED_WITHIN for o in outcomes if o.ok)
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
        assert all(o.ok and o.ended - o.started < ANSWERED_WITHIN for o in outcomes)
        serials = [o.serial for o in outcomes]
        first_new = serials.index(new)
        assert set(serials[:first_new]) == {old} and set(serials[first_new:]) == {new}  # never back to the old one
