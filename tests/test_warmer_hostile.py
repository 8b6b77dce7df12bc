"""The warmer against a hostile upstream and hostile Pods (issue 13): a tag is only set where upstream's tag points,
an image too large for the `copy` limits is refused with memory flat, a trickling blob fails by the minimum rate
and frees its worker, a Retry-After of days parks nothing for days, and the hint port refuses a foreign peer
before it reads a byte of the body.

Real distribution registries (the CCR, and the upstream behind the tests' proxy, which plays the hostile part:
it trickles, rate-limits, or serves manifests no registry would take), the in-process warmer, the fake API
server and the real kubernetes client.
"""

from __future__ import annotations

import socket
import tracemalloc
from collections.abc import Iterator

import pytest
import urllib3

from tests.support.registry_proxy import PaddedManifest
from tests.support.waiting import wait_until
from tests.support.warmer_scene import NAMESPACE, Scene, pod, post_hints, warm_scene
from webhook.copier.engine import copy_warm_request
from webhook.policy.decide import WarmRequest
from webhook.policy.reference import parse_image
from webhook.registry.client import OCI_INDEX, OCI_MANIFEST, NotFound, RegistryClient
from webhook.testing.sample_image import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, push_sample_image
from webhook.testing.slow_clients import SlowClients
from webhook.warmer.events import FAILED
from webhook.warmer.queue import JobState

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


@pytest.fixture
def scene(tmp_path) -> Iterator[Scene]:
    with warm_scene(tmp_path) as running:
        yield running


def upstream_client(scene: Scene) -> RegistryClient:
    return RegistryClient(scene.upstream.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=4)


def ccr_tag(scene: Scene, repository: str = "mirror/team/app", tag: str = "1.0") -> str | None:
    try:
        return scene.ccr_client().resolve_digest(repository, tag)
    except NotFound:
        return None


def failed_events(scene: Scene) -> list[dict]:
    return [event for event in scene.api.objects("Event", NAMESPACE) if event["reason"] == FAILED]


# -- 4. a tag in the CCR only points where upstream's tag was verified to point ------------------------------


def test_a_pod_naming_an_old_build_under_a_tag_never_moves_the_ccr_tag(scene):
    warmer = scene.start_warmer()
    assert post_hints(warmer, [{"source": scene.source}], wait=20)[0]["state"] == "done"
    assert ccr_tag(scene) == scene.image.digest  # upstream's 1.0, verified: tagged
    older = push_sample_image(upstream_client(scene), "team/app", "0.9", [30_000], seed=41)  # another build
    hostile = f"{scene.ccr.host}/mirror/team/app:1.0@{older.digest}"  # the CCR form, its tag over an old build

    (result,) = post_hints(warmer, [{"source": hostile}], wait=20)

    assert result["state"] == "done" and scene.ccr_client().has_manifest("mirror/team/app", older.digest)
    assert ccr_tag(scene) == scene.image.digest  # stored by digest only; the tag stays where upstream's is
    # the same through `ccr-webhook warm`'s path, which copies whatever it is asked (the CCR holds it: a retag)
    source = parse_image(hostile.replace(f"{scene.ccr.host}/mirror", scene.upstream_host))
    forced = copy_warm_request(warmer.registries, WarmRequest(source, parse_image(hostile)))
    assert forced.tag is None and ccr_tag(scene) == scene.image.digest
    # once upstream's tag really moves, the CCR's follows
    newer = push_sample_image(upstream_client(scene), "team/app", "1.0", [40_000], seed=42)
    (result,) = post_hints(warmer, [{"source": f"{scene.tagged}@{newer.digest}"}], wait=20)
    assert result["state"] == "done" and ccr_tag(scene) == newer.digest


# -- 8. caps per image, with memory flat while refusing ------------------------------------------------------


def huge_index(scene: Scene, children: int, padding: int) -> PaddedManifest:
    """An index of `children` image manifests, each `padding` spaces long, served by the hostile proxy only."""
    descriptors = []
    for number in range(children):
        child = PaddedManifest(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": f"sha256:{number:064x}", "size": 10},
                "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": f"sha256:{number + 1:064x}", "size": 10}],
            },
            padding,
        )
        descriptors.append(scene.proxy.serve("huge/index", child).descriptor() if padding else child.descriptor())
    index = PaddedManifest({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
    return scene.proxy.serve("huge/index", index, "1.0")


def many_layers(scene: Scene, layers: int) -> PaddedManifest:
    """One image manifest listing `layers` layers, served by the hostile proxy only."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": "sha256:" + "c" * 64, "size": 10},
        "layers": [
            {"mediaType": LAYER_MEDIA_TYPE, "digest": f"sha256:{number:064x}", "size": 10} for number in range(layers)
        ],
    }
    return scene.proxy.serve("huge/index", PaddedManifest(document), "1.0")


@pytest.mark.parametrize(
    ("make", "key", "bound"),
    [
        (lambda scene: huge_index(scene, 5000, 0), "copy.maxIndexChildren (256)", 32 * MiB),
        (lambda scene: huge_index(scene, 30, 4_000_000), "copy.maxManifestBytesPerImage", 80 * MiB),
        (lambda scene: many_layers(scene, 5000), "copy.maxBlobsPerImage (4096)", 32 * MiB),
    ],
    ids=["5000 children", "30 manifests of 4 MB", "5000 layers"],
)
def test_an_image_over_a_copy_limit_is_refused_with_an_event_and_memory_flat(scene, make, key, bound):
    warmer = scene.start_warmer()
    top = make(scene)
    image = f"{scene.upstream_host}/huge/index:1.0@{top.digest}"
    tracemalloc.start()
    try:
        scene.api.create(pod("huge", image))
        (event,) = wait_until(lambda: failed_events(scene), timeout=60, what="the CCRWarmFailed Event")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\n{key}: traced peak {peak / MiB:.1f} MiB while refusing")
    (job,) = [job for job in warmer.queue.jobs() if job.request.source.repository == "huge/index"]
    assert job.state is JobState.FAILED and job.attempts == 1  # the same image will not shrink: not retried
    assert key in job.error and key in event["message"], event["message"]
    assert peak < bound
    assert not scene.ccr_client().has_manifest("mirror/huge/index", top.digest)


# -- 9. a trickling blob fails by the minimum rate and frees its worker ------------------------------------


def test_a_trickling_blob_fails_by_the_minimum_rate_while_the_queue_copies_another_image(scene):
    healthy = push_sample_image(upstream_client(scene), "team/other", "2.0", [60_000], seed=43)
    scene.proxy.trickled_blobs.add(scene.image.blobs[0])  # 200 kB, twenty bytes a second: three hours
    warmer = scene.start_warmer(
        warmer={"concurrency": 1, "maxAttempts": 1},  # one worker: the other image waits for it to be freed
        copy={"minimumRateBytes": 65536, "minimumRateWindowSeconds": 1},
    )
    first = post_hints(warmer, [{"source": scene.source}])
    (second,) = post_hints(warmer, [{"source": f"{scene.upstream_host}/team/other:2.0@{healthy.digest}"}], wait=30)

    assert first[0]["state"] == "queued" and second["state"] == "done"
    (trickled,) = [job for job in warmer.queue.jobs() if job.request.source.repository == "team/app"]
    assert trickled.state is JobState.FAILED
    assert "below the minimum rate of 65536 bytes per 1 s" in trickled.error
    assert "copy.minimumRateBytes" in trickled.error and scene.image.blobs[0] in trickled.error
    assert not scene.in_ccr()


# -- 10. Retry-After is honoured up to the backoff maximum -----------------------------------------------------


def test_a_retry_after_of_days_parks_nothing_for_days(scene):
    warmer = scene.start_warmer(warmer={"backoffSeconds": 0.2, "backoffMaxSeconds": 1})
    scene.proxy.faults = [(429, {"Retry-After": str(3 * 86400)})] * 2  # three days, asked twice
    hint = {"source": scene.source}
    assert post_hints(warmer, [hint])[0]["state"] == "queued"
    wait_until(lambda: not scene.proxy.faults, what="the upstream asked through its rate limit")

    (result,) = post_hints(warmer, [hint], wait=20)  # hinted again after the upstream recovered

    assert result["state"] == "done" and scene.in_ccr()
    (job,) = warmer.queue.jobs()
    assert job.attempts == 3


# -- 11. the hint port refuses a foreign peer before reading its body ------------------------------------------


def test_the_hint_port_refuses_a_foreign_peer_before_reading_its_body(scene, monkeypatch):
    warmer = scene.start_warmer()
    monkeypatch.setattr("webhook.http_service.is_loopback", lambda peer: False, raising=False)  # as from another Pod
    with socket.create_connection(("127.0.0.1", warmer.hint_server.port), timeout=5) as connection:
        connection.sendall(b"POST /hints HTTP/1.1\r\nHost: warmer\r\nContent-Length: 1000\r\n\r\n")  # no body
        answer = b"".join(iter(lambda: connection.recv(4096), b""))  # until the warmer closes it
    assert answer.startswith(b"HTTP/1.1 403") and b"loopback clients only" in answer
    assert warmer.metrics.hints.labels("accepted")._value.get() == 0
    metrics = urllib3.request("GET", f"http://127.0.0.1:{warmer.metrics_server.port}/healthz", timeout=5)
    assert metrics.status == 200  # the metrics port serves any peer


# -- 12. a flood from one address shuts neither warmer port -----------------------------------------------------


def test_a_flood_from_one_address_shuts_neither_warmer_port(scene):
    warmer = scene.start_warmer()
    metrics = f"http://127.0.0.1:{warmer.metrics_server.port}"
    for port in (warmer.hint_server.port, warmer.metrics_server.port):
        with SlowClients("127.0.0.1", port, 0, 0, idle=100, heads=100, source="127.0.0.2", interval=0.5) as flood:
            assert post_hints(warmer, [{"source": scene.source}])[0]["state"]  # answered (queued, present...)
            for path in ("/healthz", "/readyz", "/metrics"):
                assert urllib3.request("GET", metrics + path, timeout=5).status == 200
            wait_until(lambda: flood.refused + len(flood.lifetimes) >= 200 - 64, what="the address's cap applied")
