"""Faults the warmer meets mid-copy, each with its documented outcome (docs/reliability.md maps faults to tests):
it never makes a half-copied image visible, finishes the copy once the fault passes, and never copies a corrupted blob.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import urllib3

from tests.support import small_disk
from tests.support.faulty_servers import corrupt_blob
from tests.support.waiting import wait_until
from tests.support.warmer_scene import Scene, warm_scene
from webhook.registry.client import NotFound
from webhook.registry.errors import RegistryServerError
from webhook.testing.processes import RegistryServer
from webhook.warmer.service import Warmer

pytestmark = pytest.mark.integration


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
    except (NotFound, RegistryServerError):  # the filesystem driver answers 500 for a tag being written: not yet
        return False


@pytest.mark.parametrize("fault", sorted(PASSING_FAULTS))
def test_the_warmer_shows_nothing_half_copied_while_a_fault_lasts_and_finishes_once_it_passes(tmp_path, fault):
    chosen = PASSING_FAULTS[fault]
    if fault == "ccr disk full" and not small_disk.supported():
        pytest.skip("this machine does not let a process mount a tmpfs in a mount namespace of its own")
    with warm_scene(tmp_path, chosen.ccr()) as scene:
        chosen.cause(scene)
        # Retries stay a second apart however long the fault lasts on a loaded machine, so the copy that follows
        # the repair is never waiting out a long backoff.
        warmer = scene.start_warmer(warmer={"maxAttempts": 100, "backoffSeconds": 0.2, "backoffMaxSeconds": 1})
        assert hint(warmer, scene)["state"] in ("queued", "running")
        wait_until(lambda: chosen.names in (job_error(warmer) or ""), timeout=60, what="a copy attempt failing for it")
        assert not scene.in_ccr()
        assert not scene.ccr_client().has_manifest("mirror/team/app", scene.image.digest)
        chosen.repair(scene)
        wait_until(lambda: tagged_in_ccr(scene), timeout=60, what="the copy finished after the fault passed")
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
