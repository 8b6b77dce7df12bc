"""The copy engine against real distribution registries: an upstream and a CCR, with faults where a test needs them."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import tracemalloc

import pytest
import urllib3

from tests.support.faulty_servers import corrupt_blob
from tests.support.local_registry import client as make_client
from tests.support.registry_auth import token_auth
from tests.support.registry_proxy import RegistryProxy
from tests.support.token_issuer import TokenIssuer
from webhook.copier.blobs import BlobCopier, BlobLocations, BlobOutcome, VerifiedBlob
from webhook.copier.engine import CopyError, CopyProgress, copy_image
from webhook.copier.retry import RetryPolicy
from webhook.registry.client import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES,
    Manifest,
    NotFound,
    RateLimited,
    RegistryClient,
    RegistryProtocolError,
    RegistryUnavailable,
    digest_of,
)
from webhook.registry.oci import Descriptor, child_manifests, image_blobs
from webhook.registry.streams import MinimumRate, TransferTooSlow
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.sample_image import PushedImage, push_sample_image

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
QUICK_RETRY = RetryPolicy(attempts=1)


@pytest.fixture(scope="module")
def up(upstream):
    return make_client(upstream.url)


@pytest.fixture(scope="module")
def mirror(ccr):
    return make_client(ccr.url)


def served(server: RegistryServer, repository: str, reference: str) -> tuple[bytes, str]:
    """A manifest's bytes and Docker-Content-Digest exactly as the registry serves them."""
    response = urllib3.request(
        "GET",
        f"{server.url}/v2/{repository}/manifests/{reference}",
        headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
    )
    assert response.status == 200, (repository, reference, response.status)
    return response.data, response.headers["Docker-Content-Digest"]


def assert_complete_copy(
    upstream: RegistryServer,
    ccr: RegistryServer,
    mirror: RegistryClient,
    pushed: PushedImage,
    repository: str,
    tag: str | None,
) -> None:
    """Every manifest served byte for byte under the same digest, every blob present with its size."""
    for digest in (*pushed.manifests, pushed.digest):
        assert served(ccr, repository, digest) == served(upstream, pushed.repository, digest)
    if tag is not None:
        assert served(ccr, repository, tag)[1] == pushed.digest
    sizes = {
        blob.digest: blob.size
        for digest in pushed.manifests
        for blob in image_blobs(Manifest("", served(upstream, pushed.repository, digest)[0], digest))
    }
    assert set(sizes) == set(pushed.blobs)
    for digest, size in sizes.items():
        assert mirror.blob_size(repository, digest) == size


def assert_no_manifest(mirror: RegistryClient, repository: str, digest: str, tag: str) -> None:
    assert mirror.has_manifest(repository, digest) is False
    with pytest.raises(NotFound):
        mirror.resolve_digest(repository, tag)


# -- what is copied ----------------------------------------------------------------------------------------


def test_an_index_and_every_platform_keep_their_digests_and_every_blob_arrives(upstream, ccr, up, mirror):
    pushed = push_sample_image(up, "app/multi", "v1", [300_000, 70_000], seed=101, platforms=2)
    seen: list[CopyProgress] = []
    result = copy_image(up, "app/multi", "v1", mirror, "mirror/app/multi", tag="v1", progress=seen.append)
    assert result.digest == pushed.digest
    assert result.manifests == (*pushed.manifests, pushed.digest)
    assert (result.blobs_copied, result.blobs_skipped, result.blobs_mounted) == (len(pushed.blobs), 0, 0)
    assert_complete_copy(upstream, ccr, mirror, pushed, "mirror/app/multi", "v1")
    assert (
        result.bytes_copied
        == seen[-1].bytes_total
        == sum(mirror.blob_size("mirror/app/multi", b) for b in pushed.blobs)
    )
    assert (seen[-1].phase, seen[-1].blobs_done, seen[-1].bytes_done) == (
        "done",
        len(pushed.blobs),
        result.bytes_copied,
    )


def test_a_single_manifest_copies_by_digest_without_a_tag(upstream, ccr, up, mirror):
    pushed = push_sample_image(up, "app/single", "v1", [120_000], seed=102)
    result = copy_image(up, "app/single", pushed.digest, mirror, "mirror/app/single")
    assert result.manifests == (pushed.digest,) and result.blobs_copied == 2
    assert_complete_copy(upstream, ccr, mirror, pushed, "mirror/app/single", None)
    with pytest.raises(NotFound):
        mirror.resolve_digest("mirror/app/single", "v1")


def dockerized(up: RegistryClient, repository: str, digest: str) -> bytes:
    """An OCI sample manifest rewritten with the Docker v2 media types (same blobs), pushed by digest."""
    document = json.loads(up.get_manifest(repository, digest).data)
    document["mediaType"] = DOCKER_MANIFEST
    document["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    for layer in document["layers"]:
        layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    data = json.dumps(document, indent=3).encode()
    up.put_manifest(repository, digest_of(data), data, DOCKER_MANIFEST)
    return data


@pytest.mark.parametrize("as_list", [False, True], ids=["docker-manifest", "docker-manifest-list"])
def test_docker_v2_manifests_and_manifest_lists_are_copied_byte_for_byte(upstream, ccr, up, mirror, as_list):
    oci = push_sample_image(
        up, f"docker/app-{int(as_list)}", "oci", [50_000], seed=103 + as_list, platforms=1 + as_list
    )
    children = [dockerized(up, oci.repository, digest) for digest in oci.manifests]
    top, media_type = children[0], DOCKER_MANIFEST
    if as_list:
        top, media_type = (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": DOCKER_MANIFEST_LIST,
                    "manifests": [
                        {
                            "mediaType": DOCKER_MANIFEST,
                            "digest": digest_of(child),
                            "size": len(child),
                            "platform": {"os": "linux", "architecture": arch},
                        }
                        for child, arch in zip(children, ("amd64", "arm64"), strict=True)
                    ],
                },
            ).encode(),
            DOCKER_MANIFEST_LIST,
        )
    digest = up.put_manifest(oci.repository, "docker", top, media_type)
    result = copy_image(up, oci.repository, "docker", mirror, "mirror/docker", tag=f"v{as_list}")
    assert result.digest == digest and result.manifests[-1] == digest
    for pushed in (*map(digest_of, children), digest):
        assert served(ccr, "mirror/docker", pushed) == served(upstream, oci.repository, pushed)
    assert mirror.get_manifest("mirror/docker", f"v{as_list}").media_type == media_type


def test_manifests_go_after_all_their_blobs_and_the_tag_last(upstream, ccr, up):
    pushed = push_sample_image(up, "app/order", "v1", [90_000, 40_000], seed=105, platforms=2)
    proxy = RegistryProxy(ccr.host).start()
    try:
        copy_image(up, "app/order", "v1", make_client(proxy.url), "mirror/app/order", tag="v1")
        puts = [path for method, path, _ in proxy.requests if method == "PUT"]
    finally:
        proxy.stop()
    manifests = [path.rsplit("/", 1)[1] for path in puts if "/manifests/" in path]
    assert manifests == [*pushed.manifests, pushed.digest, "v1"]
    first_manifest = next(i for i, path in enumerate(puts) if "/manifests/" in path)
    assert sum("/blobs/uploads/" in path for path in puts[:first_manifest]) == len(pushed.blobs)


# -- what is not copied again ------------------------------------------------------------------------------


def test_a_second_copy_is_a_fast_no_op_and_a_new_tag_costs_no_blob(upstream, up, mirror):
    push_sample_image(up, "app/again", "v1", [200_000], seed=106, platforms=2)
    first = copy_image(up, "app/again", "v1", mirror, "mirror/app/again", tag="v1")
    front = RegistryProxy(upstream.host).start()
    try:
        again = copy_image(make_client(front.url), "app/again", "v1", mirror, "mirror/app/again", tag="v1")
    finally:
        front.stop()
    asked = [(method, path.split("/")[-2]) for method, path, _ in front.requests]
    assert asked == [("HEAD", "manifests")]  # the source is asked for the tag's digest, and nothing is read
    assert (again.digest, again.manifests, again.bytes_copied, again.blobs_copied) == (first.digest, (), 0, 0)
    retagged = copy_image(up, "app/again", first.digest, mirror, "mirror/app/again", tag="stable")
    assert (retagged.manifests, retagged.bytes_copied) == ((), 0)
    assert mirror.resolve_digest("mirror/app/again", "stable") == first.digest


def test_blobs_already_in_the_target_repository_are_skipped(up, mirror):
    push_sample_image(up, "app/skip", "v1", [100_000, 60_000], seed=107)
    pushed = push_sample_image(up, "app/skip", "v2", [100_000, 60_000, 30_000], seed=107)  # same first layers
    copy_image(up, "app/skip", "v1", mirror, "mirror/app/skip", tag="v1")
    result = copy_image(up, "app/skip", "v2", mirror, "mirror/app/skip", tag="v2")
    assert (result.blobs_skipped, result.blobs_copied) == (2, 2)  # the two shared layers; the new one and its config
    assert 30_000 < result.bytes_copied < 31_000
    assert result.digest == pushed.digest


def test_a_second_repository_mounts_the_blobs_this_process_copied(up, mirror):
    pushed = push_sample_image(up, "app/shared", "v1", [150_000, 80_000], seed=108, platforms=2)
    copy_image(up, "app/shared", "v1", mirror, "mirror/first/shared", tag="v1")
    result = copy_image(up, "app/shared", "v1", mirror, "mirror/second/shared", tag="v1")
    assert (result.blobs_mounted, result.blobs_copied, result.bytes_copied) == (len(pushed.blobs), 0, 0)
    assert all(mirror.blob_size("mirror/second/shared", blob) for blob in pushed.blobs)


def test_known_repositories_are_mount_sources(up, mirror):
    pushed = push_sample_image(up, "app/known", "v1", [70_000], seed=109)
    push_sample_image(mirror, "team/known", "v1", [70_000], seed=109)  # the same image, pushed by someone else
    result = copy_image(
        up, "app/known", "v1", mirror, "mirror/app/known", tag="v1", known_repositories=["nowhere/else", "team/known"]
    )
    assert (result.blobs_mounted, result.blobs_copied) == (len(pushed.blobs), 0)


# -- how blobs move ----------------------------------------------------------------------------------------


def test_blobs_stream_without_being_held_in_memory(up, mirror):
    push_sample_image(up, "app/big", "v1", [48 * MiB], seed=110)
    tracemalloc.start()
    try:
        result = copy_image(up, "app/big", "v1", mirror, "mirror/app/big", tag="v1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.bytes_copied > 48 * MiB and peak < 12 * MiB


def test_parallel_blobs_are_bounded_by_concurrency(up, mirror, monkeypatch):
    push_sample_image(up, "app/parallel", "v1", [400_000] * 6, seed=111)
    running, most, lock = 0, 0, threading.Lock()
    upload = mirror.upload_blob

    def counted(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return upload(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(mirror, "upload_blob", counted)
    result = copy_image(up, "app/parallel", "v1", mirror, "mirror/app/parallel", tag="v1", concurrency=2)
    assert result.blobs_copied == 7 and 1 <= most <= 2


def test_a_refused_monolithic_put_falls_back_to_patches_reading_the_blob_afresh(ccr, up):
    pushed = push_sample_image(up, "app/patch", "v1", [250_000], seed=112)
    proxy = RegistryProxy(ccr.host).start()
    proxy.refuse_monolithic_put = True
    try:
        copy_image(up, "app/patch", "v1", make_client(proxy.url), "mirror/app/patch", tag="v1")
        methods = [method for method, path, _ in proxy.requests if "/blobs/uploads/" in path]
    finally:
        proxy.stop()
    assert "PATCH" in methods
    assert make_client(ccr.url).resolve_digest("mirror/app/patch", "v1") == pushed.digest


def test_a_blob_the_target_cannot_stat_is_uploaded_again(ccr, up):
    """A 5xx to HEAD blob (the registry's answer for a blob link a full disk left half-written) is not a failure:
    the blob is uploaded, which writes it anew."""
    pushed = push_sample_image(up, "app/unstat", "v1", [60_000], seed=121)
    layer = pushed.blobs[0]
    size = up.blob_size("app/unstat", layer)
    proxy = RegistryProxy(ccr.host).start()
    proxy.faults = [(500, {})]  # the first request, the HEAD of the blob
    try:
        copier = BlobCopier(
            up, "app/unstat", make_client(proxy.url), "mirror/app/unstat", BlobLocations(), retry=QUICK_RETRY
        )
        outcome = copier.copy(Descriptor(layer, size, "application/octet-stream"), lambda sent: None)
        first = proxy.requests[0][:2]
    finally:
        proxy.stop()
    assert first == ("HEAD", f"/v2/mirror/app/unstat/blobs/{layer}")
    assert outcome is BlobOutcome.COPIED
    assert make_client(ccr.url).blob_size("mirror/app/unstat", layer) == size


# -- failures ----------------------------------------------------------------------------------------------


def test_a_corrupted_upstream_blob_is_refused_and_no_manifest_reaches_the_ccr(upstream, up, mirror):
    pushed = push_sample_image(up, "app/corrupt", "v1", [3 * MiB, 40_000], seed=113, platforms=2)
    corrupt_blob(upstream, pushed.blobs[0])
    with pytest.raises(CopyError) as raised:
        copy_image(up, "app/corrupt", "v1", mirror, "mirror/app/corrupt", tag="v1")
    assert raised.value.retryable is False
    assert isinstance(raised.value.__cause__, RegistryProtocolError)
    assert pushed.blobs[0] in str(raised.value) and "app/corrupt" in str(raised.value)
    assert_no_manifest(mirror, "mirror/app/corrupt", pushed.digest, "v1")
    for child in pushed.manifests:
        assert mirror.has_manifest("mirror/app/corrupt", child) is False
    assert mirror.blob_size("mirror/app/corrupt", pushed.blobs[0]) is None


def test_a_corrupted_blob_is_never_passed_on_whole(upstream, up):
    pushed = push_sample_image(up, "app/held", "v1", [3 * MiB], seed=119)
    corrupt_blob(upstream, pushed.blobs[0])
    sent: list[int] = []
    body = VerifiedBlob(
        up, "app/held", Descriptor(pushed.blobs[0], 3 * MiB, ""), stop=threading.Event(), on_bytes=sent.append
    )
    with pytest.raises(RegistryProtocolError, match="the served bytes have digest"):
        for _ in body:
            pass
    assert 0 < sent[-1] < 3 * MiB  # the last chunk was held back until the digest was checked


def test_an_index_push_that_fails_removes_the_children_this_copy_pushed(up, mirror, monkeypatch):
    pushed = push_sample_image(up, "app/undo", "v1", [30_000], seed=114, platforms=2)
    put = mirror.put_manifest

    def refuse_index(repository, reference, data, media_type):
        if reference == pushed.digest:
            raise RegistryProtocolError("PUT manifest: unexpected HTTP 400 (MANIFEST_INVALID)")
        return put(repository, reference, data, media_type)

    monkeypatch.setattr(mirror, "put_manifest", refuse_index)
    with pytest.raises(CopyError, match=f"push manifest {pushed.digest}") as raised:
        copy_image(up, "app/undo", "v1", mirror, "mirror/app/undo", tag="v1")
    assert raised.value.retryable is False
    for digest in (*pushed.manifests, pushed.digest):
        assert mirror.has_manifest("mirror/app/undo", digest) is False


def test_a_failed_copy_leaves_manifests_that_were_there_before(up, mirror, monkeypatch):
    pushed = push_sample_image(up, "app/kept", "v1", [30_000], seed=115, platforms=2)
    copy_image(up, "app/kept", "v1", mirror, "mirror/app/kept", tag="v1")
    mirror.delete_manifest("mirror/app/kept", pushed.digest)  # the children stay
    monkeypatch.setattr(mirror, "put_manifest", lambda *args: (_ for _ in ()).throw(RegistryProtocolError("refused")))
    with pytest.raises(CopyError):
        copy_image(up, "app/kept", "v1", mirror, "mirror/app/kept", tag="v1")
    assert all(mirror.has_manifest("mirror/app/kept", child) for child in pushed.manifests)


def test_a_missing_upstream_image_is_not_retryable_and_says_which(up, mirror):
    with pytest.raises(CopyError) as raised:
        copy_image(up, "app/absent", "v9", mirror, "mirror/app/absent", tag="v9")
    assert raised.value.retryable is False and isinstance(raised.value.__cause__, NotFound)
    assert "app/absent:v9" in str(raised.value) and "resolve v9" in str(raised.value)


def test_an_unreachable_ccr_is_retryable(up):
    push_sample_image(up, "app/down", "v1", [1000], seed=116)
    down = make_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CopyError, match="cannot connect") as raised:
        copy_image(up, "app/down", "v1", down, "mirror/app/down", tag="v1", retry=QUICK_RETRY)
    assert raised.value.retryable is True


def test_the_ccr_restarted_mid_copy_the_copy_still_completes(upstream, up):
    pushed = push_sample_image(up, "app/restart", "v1", [8 * MiB] * 4, seed=117)
    with RegistryServer() as ccr:
        client = make_client(ccr.url)
        restart = threading.Timer(0.5, ccr.start)
        stopped = threading.Event()

        def stop_midway(progress: CopyProgress) -> None:
            if progress.bytes_copied >= 4 * MiB and not stopped.is_set():
                stopped.set()
                ccr.stop()
                restart.start()

        failed: list[CopyError] = []
        try:
            result = copy_image(up, "app/restart", "v1", client, "mirror/app/restart", tag="v1", progress=stop_midway)
        except CopyError as err:  # the retries ran out before the registry came back: a second copy finishes
            failed.append(err)
            restart.join()
            result = copy_image(up, "app/restart", "v1", client, "mirror/app/restart", tag="v1")
        restart.join()
        assert all(err.retryable for err in failed)
        assert stopped.is_set() and result.digest == pushed.digest
        assert_complete_copy(upstream, ccr, client, pushed, "mirror/app/restart", "v1")


# -- authentication ----------------------------------------------------------------------------------------


def test_a_token_authenticated_upstream_is_copied_with_its_credentials(tmp_path, ccr, mirror):
    issuer = TokenIssuer({"puller": "s3cret-pull"}, anonymous_pull=False).start()
    try:
        with RegistryServer(auth=token_auth(tmp_path, issuer)) as registry:
            credentials = tmp_path / "config.json"
            auth = "cHVsbGVyOnMzY3JldC1wdWxs"  # puller:s3cret-pull
            credentials.write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
            source = make_client(registry.url, credentials)
            pushed = push_sample_image(source, "private/app", "v1", [60_000], seed=118, platforms=2)
            result = copy_image(source, "private/app", "v1", mirror, "mirror/private/app", tag="v1")
            anonymous = make_client(registry.url)
            with pytest.raises(CopyError) as raised:
                copy_image(anonymous, "private/app", "v1", mirror, "mirror/private/other", tag="v1")
    finally:
        issuer.stop()
    assert result.digest == pushed.digest and result.blobs_copied == len(pushed.blobs)
    assert raised.value.retryable is False and "s3cret" not in str(raised.value) and auth not in str(raised.value)


# -- the manifest walk, without registries -----------------------------------------------------------------


def test_descriptors_leave_out_non_distributable_layers_and_refuse_bad_ones():
    sha = "sha256:" + hashlib.sha256(b"x").hexdigest()
    manifest = {
        "config": {"mediaType": "c", "digest": sha, "size": 1},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": sha, "size": 5},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha, "size": 2},
        ],
    }
    blobs = image_blobs(Manifest(DOCKER_MANIFEST, json.dumps(manifest).encode(), sha))
    assert [(blob.media_type, blob.size) for blob in blobs] == [("c", 1), ("application/vnd.oci.image.layer.v1.tar", 2)]
    for bad in ({"digest": "sha256:short", "size": 1}, {"digest": sha, "size": -1}, {"digest": sha, "size": True}):
        with pytest.raises(RegistryProtocolError, match="cannot be copied"):
            child_manifests(Manifest(DOCKER_MANIFEST_LIST, json.dumps({"manifests": [bad]}).encode(), sha))
    with pytest.raises(RegistryProtocolError, match="no config"):
        image_blobs(Manifest(DOCKER_MANIFEST, b"{}", sha))


def test_retries_are_for_passing_failures_only_and_honour_retry_after():
    calls: list[float] = []

    def failing(error: Exception, times: int):
        def operation() -> str:
            calls.append(time.monotonic())
            if len(calls) <= times:
                raise error
            return "done"

        return operation

    policy = RetryPolicy(attempts=3, backoff_seconds=0.01, max_wait_seconds=1.0)
    assert policy.run(failing(RateLimited("429", 0.1), 2)) == "done"
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.1
    for error in (NotFound("blob", "x"), RateLimited("429", 5.0), RegistryUnavailable("503")):
        calls.clear()
        with pytest.raises(type(error)):
            policy.run(failing(error, 5))
        assert len(calls) == (3 if isinstance(error, RegistryUnavailable) else 1)


def test_the_minimum_rate_fails_a_trickle_and_a_transfer_past_its_deadline_but_never_a_steady_one():
    now = [0.0]
    rule = MinimumRate(1000, 10.0, 100.0, "copy.test")
    steady = rule.watch("blob steady", clock=lambda: now[0])
    for _ in range(9):  # 1000 bytes in every 10 s window, for 90 s
        now[0] += 10.0
        steady.received(1000)
    trickle = rule.watch("blob slow", clock=lambda: now[0])
    now[0] += 5.0
    trickle.received(600)  # half a window: not judged yet
    now[0] += 5.0
    with pytest.raises(TransferTooSlow, match=r"blob slow: 999 bytes in 10.0 s, below the minimum rate .*copy.test"):
        trickle.received(399)
    late = rule.watch("blob late", clock=lambda: now[0])
    now[0] += 101.0
    with pytest.raises(TransferTooSlow, match=r"blob late: not finished within 100 s \(copy.test\)"):
        late.received(10**9)
