"""The demo: a small cluster's worth of ccr-webhook on loopback, and a readable account of what it did.

Two real distribution registries (an upstream holding generated images, and an empty CCR), an
in-memory Kubernetes API with one namespace labelled enforce and one dry-run, the real webhook
(gunicorn over TLS) and the real warmer, and the CCR front reaching the upstream across an emulated
WAN. Sample Pods go through /mutate and /dry-run as the API server would send them; every claim
printed is checked against the registries (and the front's metrics) as it is made. Steps 1 to 7 run
the `swap: exists` policy (upstream until the CCR holds an image); step 8 the default, `swap: always`.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.registry.client import RegistryClient
from webhook.registry.errors import RegistryUnavailable
from webhook.registry.oci import image_blobs
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer
from webhook.testing.review_client import PodDenied, admitted_pod, patch_of, pod_object, pod_review, send_review
from webhook.testing.sample_image import PushedImage, push_sample_image
from webhook.testing.wan import WanProxy
from webhook.testing.warmer_process import LocalWarmer
from webhook.testing.webhook_process import LocalWebhook

POLICY_LABEL = "ccr-webhook/policy"
ENFORCED, DRY_RUN = "shop", "staging"
PREFIX = "mirror"
MiB = 1024 * 1024
WAN_MBIT = 40  # the front's link to the upstream: slow enough that a second node joins mid-fetch


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
    front: LocalFront
    wan: WanProxy
    default_webhook: LocalWebhook  # the default policy (swap: always), rewriting to the front
    model: PushedImage  # an image nothing else in the demo touches: cold until step 8

    def client(self, server: RegistryServer | LocalFront) -> RegistryClient:
        """A registry client for one of the demo's registries."""
        return RegistryClient(server.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=4)

    def submit(self, pod: dict[str, Any], path: str = "/mutate") -> tuple[dict[str, Any], dict[str, Any]]:
        """Send `pod` through the webhook as the API server would; (the review, the response)."""
        return self.submit_to(self.webhook, pod, path)

    def submit_to(
        self, webhook: LocalWebhook, pod: dict[str, Any], path: str = "/mutate"
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Send `pod` through `webhook` as the API server would; (the review, the response)."""
        review = pod_review(pod)
        return review, send_review(webhook.url + path, review, webhook.client_ssl_context())


def settings_for(upstream: RegistryServer, ccr: RegistryServer) -> dict[str, Any]:
    """The demo's configuration: the upstream mirrored under `mirror/` in the CCR, the default policy."""
    return {
        "ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True},
        "upstreams": [{"registry": upstream.host, "endpoint": upstream.url, "insecure": True, "prefix": PREFIX}],
        "policy": {"rejectLatest": True, "pinDigest": True, "swap": "exists", "copy": "delayed"},  # the fallback
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
        model = push_sample_image(client, "demo/model", "3.0", layer_sizes=[6 * MiB, 3 * MiB], seed=30)
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
        wan = stack.enter_context(WanProxy(upstream.port, rtt_ms=40, mbit_per_second=WAN_MBIT))
        front, default_hook = _front_and_default_webhook(upstream, ccr, wan)
        stack.callback(front.cleanup)
        stack.callback(default_hook.cleanup)
        front.start()
        default_hook.start()
        say(
            f"  upstream registry  {upstream.host}   demo/shop:1.4 "
            f"({len(shop.blobs)} blobs, {_mib(shop.total_bytes)}), "
            f"demo/tools:2.1 (index of {len(tools.manifests)} platforms)"
        )
        say(f"  CCR                {ccr.host}   empty; upstream images go under {ccr.host}/{PREFIX}/")
        say(f"  Kubernetes API     {api.url}   namespaces {ENFORCED} ({POLICY_LABEL}=enforce), {DRY_RUN} (=dry-run)")
        say(f"  webhook            {hook.url}   gunicorn, TLS with its own CA, /mutate and /dry-run")
        say(f"  warmer             {warmer.hint_url}   hints from the webhook, watching Pods under a Lease")
        say(f"  CCR front          {front.host}   what nodes pull from; the upstream is across a {WAN_MBIT} Mbit/s WAN")
        yield Cluster(upstream, ccr, api, hook, warmer, shop, tools, front, wan, default_hook, model)


def _front_and_default_webhook(
    upstream: RegistryServer, ccr: RegistryServer, wan: WanProxy
) -> tuple[LocalFront, LocalWebhook]:
    """The CCR front (the upstream across the WAN) and a webhook with the default policy that rewrites to it.

    This webhook sends the warmer no hints (the demo's warmer reads upstreams directly), so every byte
    that crosses the WAN in step 8 is the front's.
    """
    mirrored = {
        "registry": upstream.host,
        "endpoint": f"http://127.0.0.1:{wan.port}",
        "insecure": True,
        "prefix": PREFIX,
    }
    front = LocalFront({"ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True}, "upstreams": [mirrored]})
    settings = {
        "ccr": {"registry": front.host, "endpoint": ccr.url, "insecure": True},
        "upstreams": [
            {**mirrored, "endpoint": upstream.url}
        ],  # admission resolves tags directly: only pulls cross the WAN
        "webhook": {"warmerUrl": "", "deadlineSeconds": 2},
    }
    return front, LocalWebhook(settings, workers=1)


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
            _through_the_front(cluster, say),
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


def _through_the_front(cluster: Cluster, say: Callable[[str], None]) -> tuple[str, bool]:
    model, front = cluster.model, cluster.front
    say("\n8. The default policy (swap: always): a cold image, pulled through the CCR front while it is fetched")
    review, response = cluster.submit_to(
        cluster.default_webhook, pod_object("model-1", ENFORCED, [("serve", f"{cluster.upstream.host}/demo/model:3.0")])
    )
    stored = admitted_pod(review, response)
    _show_patch(response, say)
    image = stored["spec"]["containers"][0]["image"]
    rewritten = image == f"{front.host}/{PREFIX}/demo/model:3.0@{model.digest}"
    warned = any("not in the CCR yet" in warning for warning in response.get("warnings", []))
    say(
        "   check: rewritten to the front at once, with a warning that the image is cold: "
        + ("yes" if rewritten and warned else "NO")
    )
    blob_bytes = sum(_blob_sizes(cluster, model).values())
    cluster.wan.reset_counters()
    node_a = _Node("node-a", cluster.client(front), f"{PREFIX}/demo/model", model.digest)
    node_a.start()
    joined_at = _wait_mid_fetch(front, blob_bytes)
    node_b = _Node("node-b", cluster.client(front), f"{PREFIX}/demo/model", model.digest)
    node_b.start()
    for node in (node_a, node_b):
        node.join(60)
        verified = "yes" if node.ok else f"NO: {node.error}"
        say(f"   {node.name}: {_mib(node.received)} in {node.seconds:.1f} s, every blob's digest verified: {verified}")
    say(
        f"   node-b started after {_mib(int(joined_at or 0))} of {_mib(blob_bytes)} had arrived from upstream "
        f"(mid-fetch: {'yes' if joined_at else 'NO'})"
    )
    # the CCR holds the image once every blob is verified and committed: every fetch has ended by then
    held = _wait_held(cluster.client(cluster.ccr), f"{PREFIX}/demo/model", model.digest, 30)
    metrics = front.metrics()
    fetched = _metric(metrics, "ccr_front_upstream_bytes_total")
    committed = _metric(metrics, "ccr_front_fetches_total", 'outcome="committed"')
    from_flight = _metric(metrics, "ccr_front_served_bytes_total", 'source="flight"')
    wan = cluster.wan.down.bytes_sent
    say(
        f"   front metrics: {_mib(int(fetched))} from upstream ({fetched / blob_bytes:.2f}x the blobs), "
        f"{committed:.0f} blob fetches committed, {_mib(int(from_flight))} served while in flight"
    )
    say(
        f"   WAN towards the cluster: {_mib(wan)}, the image is {_mib(model.total_bytes)} "
        f"({wan / model.total_bytes:.2f}x)"
    )
    once = fetched == blob_bytes and committed == len(model.blobs) and wan < 1.1 * model.total_bytes
    say(f"   check: two nodes, one upstream fetch of every blob: {'yes' if once else 'NO'}")
    say(
        "   check: the CCR holds the image, committed by the front once every blob was verified: "
        + ("yes" if held else "NO")
    )
    ok = rewritten and warned and node_a.ok and node_b.ok and joined_at is not None and once and held
    return "a cold image through the front, fetched once", ok


class _Node(threading.Thread):
    """A node pulling one image through the front: the manifest, then every blob, each digest-checked."""

    def __init__(self, name: str, client: RegistryClient, repository: str, digest: str) -> None:
        super().__init__(name=name, daemon=True)
        self.client, self.repository, self.digest = client, repository, digest
        self.received, self.seconds, self.ok = 0, 0.0, False
        self.error: Exception | None = None

    def run(self) -> None:
        started = time.monotonic()
        try:
            manifest = self.client.get_manifest(self.repository, self.digest)
            for blob in image_blobs(manifest):
                stream = self.client.open_blob(self.repository, blob.digest)
                try:
                    while data := stream.read():  # the last read checks the digest
                        self.received += len(data)
                finally:
                    stream.close()
            self.ok = True
        except Exception as err:  # reported as a failed check, never raised
            self.error = err
        finally:
            self.seconds = time.monotonic() - started
            self.client.close()


def _wait_mid_fetch(front: LocalFront, total: int, timeout: float = 30.0) -> float | None:
    """Bytes fetched from upstream when some, but not all, have arrived; None if that moment never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fetched = _metric(front.metrics(), "ccr_front_upstream_bytes_total")
        if fetched >= total:
            return None
        if fetched >= total / 4:
            return fetched
        time.sleep(0.05)
    return None


def _wait_held(ccr: RegistryClient, repository: str, digest: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _holds(ccr, repository, digest):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _blob_sizes(cluster: Cluster, image: PushedImage) -> dict[str, int]:
    upstream = cluster.client(cluster.upstream)
    try:
        return {blob: upstream.blob_size(image.repository, blob) or 0 for blob in image.blobs}
    finally:
        upstream.close()


def _metric(text: str, name: str, labels: str = "") -> float:
    """One sample of a Prometheus exposition (0 when absent)."""
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


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
