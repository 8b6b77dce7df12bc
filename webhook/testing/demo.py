"""The demo: a small cluster's worth of ccr-webhook on loopback, and a readable account of what it did.

Two real distribution registries (an upstream holding generated images, and an empty CCR), an
in-memory Kubernetes API with one namespace labelled enforce and one dry-run, the real webhook
(gunicorn over TLS) and the real warmer. Sample Pods go through /mutate and /dry-run as the API
server would send them; every claim printed is checked against the registries as it is made.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.registry.client import RegistryClient
from webhook.registry.errors import RegistryUnavailable
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.processes import RegistryServer
from webhook.testing.review_client import PodDenied, admitted_pod, patch_of, pod_object, pod_review, send_review
from webhook.testing.sample_image import PushedImage, push_sample_image
from webhook.testing.warmer_process import LocalWarmer
from webhook.testing.webhook_process import LocalWebhook

POLICY_LABEL = "ccr-webhook/policy"
ENFORCED, DRY_RUN = "shop", "staging"
PREFIX = "mirror"
MiB = 1024 * 1024


@dataclass
class Cluster:
    """Everything the demo runs, and how to reach it."""

    upstream: RegistryServer
    ccr: RegistryServer
    api: LocalAPIServer
    webhook: LocalWebhook
    warmer: LocalWarmer
    shop: PushedImage
    tools: PushedImage

    def client(self, server: RegistryServer) -> RegistryClient:
        """A registry client for one of the demo's registries."""
        return RegistryClient(server.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=4)

    def submit(self, pod: dict[str, Any], path: str = "/mutate") -> tuple[dict[str, Any], dict[str, Any]]:
        """Send `pod` through the webhook as the API server would; (the review, the response)."""
        review = pod_review(pod)
        return review, send_review(self.webhook.url + path, review, self.webhook.client_ssl_context())


def settings_for(upstream: RegistryServer, ccr: RegistryServer) -> dict[str, Any]:
    """The demo's configuration: the upstream mirrored under `mirror/` in the CCR, the default policy."""
    return {
        "ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True},
        "upstreams": [{"registry": upstream.host, "endpoint": upstream.url, "insecure": True, "prefix": PREFIX}],
        "policy": {"rejectLatest": True, "pinDigest": True, "swap": "exists", "copy": "delayed"},
        "resolver": {"ccrCacheSeconds": 1, "negativeCacheSeconds": 1},
        "warmer": {"leaseSeconds": 3, "eventIntervalSeconds": 60},
    }


@contextlib.contextmanager
def running_cluster(say: Callable[[str], None]) -> Iterator[Cluster]:
    """Start every part on loopback, push the sample images upstream; stop and clean up on exit."""
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ccr-demo-")))
        upstream = stack.enter_context(RegistryServer())
        ccr = stack.enter_context(RegistryServer())
        client = RegistryClient(upstream.url, insecure=True, connect_timeout=2, read_timeout=30, max_connections=4)
        shop = push_sample_image(client, "demo/shop", "1.4", layer_sizes=[3 * MiB, 2 * MiB, MiB], seed=14)
        tools = push_sample_image(client, "demo/tools", "2.1", layer_sizes=[MiB, MiB // 2], seed=21, platforms=2)
        api = stack.enter_context(LocalAPIServer())
        api.create(_namespace(ENFORCED, "enforce"))
        api.create(_namespace(DRY_RUN, "dry-run"))
        settings = settings_for(upstream, ccr)
        warmer = LocalWarmer(settings, api.write_kubeconfig(workdir / "kubeconfig"), identity="demo-warmer")
        stack.callback(warmer.cleanup)
        warmer.start()
        settings["webhook"] = {"warmerUrl": warmer.hint_url, "deadlineSeconds": 2}
        hook = LocalWebhook(settings, workers=2)
        stack.callback(hook.cleanup)
        hook.start()
        say(
            f"  upstream registry  {upstream.host}   demo/shop:1.4 "
            f"({len(shop.blobs)} blobs, {_mib(shop.total_bytes)}), "
            f"demo/tools:2.1 (index of {len(tools.manifests)} platforms)"
        )
        say(f"  CCR                {ccr.host}   empty; upstream images go under {ccr.host}/{PREFIX}/")
        say(f"  Kubernetes API     {api.url}   namespaces {ENFORCED} ({POLICY_LABEL}=enforce), {DRY_RUN} (=dry-run)")
        say(f"  webhook            {hook.url}   gunicorn, TLS with its own CA, /mutate and /dry-run")
        say(f"  warmer             {warmer.hint_url}   hints from the webhook, watching Pods under a Lease")
        yield Cluster(upstream, ccr, api, hook, warmer, shop, tools)


def run_demo(say: Callable[[str], None] = print) -> int:
    """Run the whole demo, printing as it goes; 0 when everything happened as described, 1 if not."""
    say("ccr-webhook demo: Pods through the webhook, images pinned and moved to the CCR, latest refused\n")
    say("Starting, all on 127.0.0.1:")
    with running_cluster(say) as cluster:
        checks = [
            _first_pod(cluster, say),
            _latest_refused(cluster, say),
            _dry_run(cluster, say),
            _unlisted_registry(cluster, say),
            _the_warm(cluster, say),
            _second_pod(cluster, say),
        ]
    failed = [name for name, ok in checks if not ok]
    say("\n" + ("Everything happened as described." if not failed else f"NOT as described: {', '.join(failed)}"))
    return 0 if not failed else 1


def _first_pod(cluster: Cluster, say: Callable[[str], None]) -> tuple[str, bool]:
    upstream = cluster.upstream.host
    say(f"\n1. A first Pod in namespace {ENFORCED} (enforce): the CCR does not hold its images yet")
    pod = pod_object(
        "web-1",
        ENFORCED,
        [("web", f"{upstream}/demo/shop:1.4"), ("tools", f"{upstream}/demo/tools:2.1")],
        init_containers=[("migrate", f"{upstream}/demo/shop:1.4")],
    )
    review, response = cluster.submit(pod)
    stored = admitted_pod(review, response)
    cluster.api.create(stored)  # what the API server does next: the warmer's Pod watch sees it too
    _show_patch(response, say)
    expected = {f"{upstream}/demo/shop:1.4@{cluster.shop.digest}", f"{upstream}/demo/tools:2.1@{cluster.tools.digest}"}
    pinned = {container["image"] for container in stored["spec"]["containers"] + stored["spec"]["initContainers"]}
    ok = pinned == expected and _digest_upstream(cluster, "demo/shop", "1.4") == cluster.shop.digest
    say(f"   check: pinned to the digests the upstream serves (Docker-Content-Digest): {'yes' if ok else 'NO'}")
    return "first Pod pinned upstream", ok


def _latest_refused(cluster: Cluster, say: Callable[[str], None]) -> tuple[str, bool]:
    upstream = cluster.upstream.host
    say("\n2. `latest`, explicit or implied, is refused")
    pod = pod_object(
        "web-latest", ENFORCED, [("web", f"{upstream}/demo/shop:latest"), ("tools", f"{upstream}/demo/tools")]
    )
    review, response = cluster.submit(pod)
    try:
        admitted_pod(review, response)
    except PodDenied as denial:
        say(f"   denied ({response['status']['code']}): {denial}")
        return "latest refused", "web" in str(denial) and "tools" in str(denial)
    say("   NOT denied")
    return "latest refused", False


def _dry_run(cluster: Cluster, say: Callable[[str], None]) -> tuple[str, bool]:
    upstream = cluster.upstream.host
    say(f"\n3. Namespace {DRY_RUN} is in dry-run: everything is evaluated, nothing changed or refused")
    pod = pod_object(
        "web-1", DRY_RUN, [("web", f"{upstream}/demo/shop:1.4"), ("debug", f"{upstream}/demo/shop:latest")]
    )
    _, response = cluster.submit(pod, path="/dry-run")
    say(
        f"   allowed: {response['allowed']}, patch: {'none' if not patch_of(response) else 'YES'}; "
        "the API server shows:"
    )
    for warning in response.get("warnings", []):
        say(f"     Warning: {warning}")
    for key, value in sorted((response.get("auditAnnotations") or {}).items()):
        say(f"   audit annotation {key}: {value}")
    return "dry-run changes nothing", response["allowed"] and not patch_of(response) and bool(response.get("warnings"))


def _unlisted_registry(cluster: Cluster, say: Callable[[str], None]) -> tuple[str, bool]:
    say("\n4. An image from a registry that is not a configured upstream is left alone, and never contacted")
    image = "registry.example.internal/team/app:3.2"
    _, response = cluster.submit(pod_object("other", ENFORCED, [("app", image)]))
    ok = response["allowed"] and not patch_of(response)
    say(f"   {image}: allowed unchanged: {'yes' if ok else 'NO'}")
    return "unlisted registry untouched", ok


def _the_warm(cluster: Cluster, say: Callable[[str], None]) -> tuple[str, bool]:
    say("\n5. The warm: on first sight the warmer copies both images into the CCR (blobs first, manifests, tag last)")
    ccr = cluster.client(cluster.ccr)
    wanted = [(f"{PREFIX}/demo/shop", cluster.shop), (f"{PREFIX}/demo/tools", cluster.tools)]
    started = time.monotonic()
    while time.monotonic() - started < 60 and not all(
        _holds(ccr, repository, image.digest) for repository, image in wanted
    ):
        time.sleep(0.2)
    held = all(_holds(ccr, repository, image.digest) for repository, image in wanted)
    children = all(ccr.has_manifest(f"{PREFIX}/demo/tools", child) for child in cluster.tools.manifests)
    blobs = all(ccr.blob_size(repository, blob) is not None for repository, image in wanted for blob in image.blobs)
    say(
        f"   the CCR holds both (every platform, every blob verified): {'yes' if held and children and blobs else 'NO'}"
    )
    time.sleep(1.0)  # the Events are posted from a background queue
    for event in sorted(cluster.api.objects("Event", namespace=ENFORCED), key=lambda e: e.get("reason", "")):
        say(f"   Event on pod/{event['involvedObject']['name']}: {event['reason']}: {event['message']}")
    copied = [
        line.split()[1]
        for line in cluster.warmer.metrics().splitlines()
        if line.startswith("ccr_webhook_warm_bytes_total ")
    ]
    say(f"   warmer metric ccr_webhook_warm_bytes_total: {_mib(int(float(copied[0]))) if copied else 'missing'}")
    return "warm into the CCR", held and children and blobs


def _second_pod(cluster: Cluster, say: Callable[[str], None]) -> tuple[str, bool]:
    upstream, ccr = cluster.upstream.host, cluster.ccr.host
    say("\n6. The next Pod of the same images is rewritten to the CCR, pinned to the same digests")
    time.sleep(1.1)  # the webhook trusts a 'not in the CCR' answer for resolver.ccrCacheSeconds (1 s here)
    pod = pod_object("web-2", ENFORCED, [("web", f"{upstream}/demo/shop:1.4"), ("tools", f"{upstream}/demo/tools:2.1")])
    review, response = cluster.submit(pod)
    stored = admitted_pod(review, response)
    _show_patch(response, say)
    expected = [
        f"{ccr}/{PREFIX}/demo/shop:1.4@{cluster.shop.digest}",
        f"{ccr}/{PREFIX}/demo/tools:2.1@{cluster.tools.digest}",
    ]
    rewritten = [container["image"] for container in stored["spec"]["containers"]] == expected
    say("\n7. Sent again (the API server reinvokes webhooks): nothing changes")
    again_review = pod_review(stored)
    again = send_review(cluster.webhook.url + "/mutate", again_review, cluster.webhook.client_ssl_context())
    idempotent = again["allowed"] and not patch_of(again)
    say(f"   allowed, no patch: {'yes' if idempotent else 'NO'}")
    return "second Pod rewritten to the CCR, idempotent", rewritten and idempotent


def _show_patch(response: dict[str, Any], say: Callable[[str], None]) -> None:
    for operation in patch_of(response):
        if operation["path"].endswith("/image"):
            say(f"   {operation['path']:<28} -> {operation['value']}")
        else:
            say(f"   {operation['path']:<28} records the original images")
    for warning in response.get("warnings", []):
        say(f"   Warning: {warning}")
    for key, value in sorted((response.get("auditAnnotations") or {}).items()):
        say(f"   audit annotation {key}: {value}")


def _holds(ccr: RegistryClient, repository: str, digest: str) -> bool:
    """Whether the CCR serves the manifest yet; a 500 for one being written (its writes are not atomic) is "not yet"."""
    try:
        return ccr.has_manifest(repository, digest)
    except RegistryUnavailable:
        return False


def _digest_upstream(cluster: Cluster, repository: str, tag: str) -> str:
    return cluster.client(cluster.upstream).resolve_digest(repository, tag)


def _namespace(name: str, policy: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {POLICY_LABEL: policy}}}


def _mib(size: int) -> str:
    return f"{size / MiB:.1f} MiB"
