"""Nodes that pull like a kubelet: a real client (skopeo) into the node's own directory, on the kubelet's back-off.

A node pulls one platform's manifest and its blobs, as containerd does, and verifies each blob's digest
as it writes it (skopeo checks every blob it copies). By default it fetches the layers in parallel, as the
node runtimes do (containerd 3 at once, CRI-O 6): skopeo into an OCI layout does (6). `parallel=False`
writes skopeo's dir: layout instead, which skopeo fills one blob at a time: a pessimistic client for a
stream-through CCR, whose last layers arrive only as the first ones finish. A failed pull, such as a CCR
that does not hold the image yet, is tried again after the kubelet's image-pull back-off: 10 s, doubling,
capped at 300 s. `image_held` checks afterwards, independently, that the directory holds every blob with
the right digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from webhook.node.hosts import HOSTS_FILE, render_hosts_toml
from webhook.policy.reference import parse_image
from webhook.testing.containerd import ContainerdNode

BACKOFF_INITIAL_SECONDS = 10.0  # the kubelet's image-pull back-off (pkg/kubelet: backOffPeriod)
BACKOFF_MAX_SECONDS = 300.0  # and its cap (MaxContainerBackOff)
HASH_CHUNK = 4 * 1024 * 1024
OCI_LAYOUT_TAG = "pulled"  # the name the image gets in a node's OCI layout
_SKOPEO_MESSAGE = re.compile(r'msg="(.*)"\s*$')
_INDEX_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


class ImageNotHeld(Exception):
    """A node's directory lacks a blob of the image, or holds one whose digest is wrong."""


def backoff_delays(initial: float = BACKOFF_INITIAL_SECONDS, cap: float = BACKOFF_MAX_SECONDS) -> Iterator[float]:
    """The waits between a kubelet's failed image pulls: `initial`, doubling, never above `cap`."""
    delay = initial
    while True:
        yield min(delay, cap)
        delay = min(delay * 2, cap)


def pullable_reference(image: str) -> str:
    """`image` as a client pulls it: by digest alone when pinned (a tag beside a digest is only a label)."""
    ref = parse_image(image)
    return str(dataclasses.replace(ref, tag=None)) if ref.digest else str(ref)


def skopeo_pull(image: str, destination: Path, parallel: bool = True) -> str | None:
    """Copy `image` into the directory `destination` with skopeo, as a fresh pull; None on success, else the error.

    `parallel`: an OCI layout, its layers fetched at once; else skopeo's dir: layout, one blob at a time."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "skopeo",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        f"docker://{pullable_reference(image)}",
        *(["--dest-oci-accept-uncompressed-layers"] if parallel else []),  # store the bytes as pulled, never gzip
        f"oci:{destination}:{OCI_LAYOUT_TAG}" if parallel else f"dir:{destination}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode == 0:
        return None
    lines = completed.stderr.strip().splitlines() or [f"skopeo exited with {completed.returncode}"]
    message = _SKOPEO_MESSAGE.search(lines[-1])  # time="..." level=fatal msg="what went wrong"
    return message.group(1) if message else lines[-1]


def containerd_pull(node: ContainerdNode, image: str, destination: Path, snapshotter: str = "native") -> str | None:
    """Pull `image` with `node`'s containerd (`ctr images pull --max-concurrent-downloads 3`, unpacked by
    `snapshotter`), configured by a hosts.toml for its registry as the node agent writes one (plain HTTP on
    loopback here); None on success."""
    reference = pullable_reference(image)
    host = parse_image(reference).registry
    hosts_dir = destination.parent / "certs.d"
    (hosts_dir / host).mkdir(parents=True, exist_ok=True)
    (hosts_dir / host / HOSTS_FILE).write_text(render_hosts_toml(f"http://{host}", None, None, None))
    pulled = node.pull(reference, hosts_dir, timeout=3600.0, snapshotter=snapshotter)
    if pulled.ok:
        return None
    lines = [line for line in pulled.output.strip().splitlines() if line.strip()] or [f"ctr exited {pulled.returncode}"]
    return lines[-1][-300:]


@dataclass(frozen=True)
class PullAttempt:
    """One pull: when it started and how long it took, in seconds from the rollout's start, and why it failed."""

    started: float
    seconds: float
    error: str | None


@dataclass(frozen=True)
class NodePull:
    """What one node did: the image it was told to run, each attempt, and when it held the image (None: never)."""

    node: str
    image: str
    attempts: tuple[PullAttempt, ...]
    held_at: float | None


def pull_like_kubelet(
    node: str,
    image: str,
    destination: Path,
    rollout_start: float,
    give_up_after: float,
    *,
    pull: Callable[[str, Path], str | None] = skopeo_pull,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> NodePull:
    """Pull `image` into `destination` until it succeeds (backing off as a kubelet does) or `give_up_after` s pass."""
    attempts: list[PullAttempt] = []
    delays = backoff_delays()
    while True:
        started = clock()
        error = pull(image, destination)
        finished = clock()
        attempts.append(PullAttempt(started - rollout_start, finished - started, error))
        if error is None:
            return NodePull(node, image, tuple(attempts), finished - rollout_start)
        delay = next(delays)
        if finished + delay - rollout_start > give_up_after:
            return NodePull(node, image, tuple(attempts), None)
        sleep(delay)


def image_held(directory: Path) -> int:
    """Verify that `directory` (an OCI layout, or skopeo's dir: layout) holds the manifest's config and every layer;
    their bytes."""
    blobs = directory / "blobs" / "sha256" if (directory / "index.json").exists() else directory
    try:
        if blobs is directory:
            manifest = json.loads((directory / "manifest.json").read_bytes())
        else:
            pulled = json.loads((directory / "index.json").read_bytes())["manifests"][0]["digest"]
            manifest = json.loads((blobs / pulled.removeprefix("sha256:")).read_bytes())
    except (OSError, ValueError, LookupError, TypeError, AttributeError) as err:
        raise ImageNotHeld(f"{directory}: no readable manifest.json or index.json ({err})") from None
    if manifest.get("mediaType") in _INDEX_MEDIA_TYPES or "manifests" in manifest:
        raise ImageNotHeld(f"{directory}: holds an index, not one platform's image")
    descriptors = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    total = 0
    for descriptor in descriptors:
        total += _verified_blob(blobs, descriptor.get("digest", ""), descriptor.get("size"))
    return total


def _verified_blob(directory: Path, digest: str, size: object) -> int:
    """Check one blob file against its digest and size; return its size."""
    algorithm, _, expected = digest.partition(":")
    if algorithm != "sha256" or not expected:
        raise ImageNotHeld(f"{directory}: unsupported or missing digest {digest!r}")
    hasher, length = hashlib.sha256(), 0
    try:
        with open(directory / expected, "rb") as blob:
            while chunk := blob.read(HASH_CHUNK):
                hasher.update(chunk)
                length += len(chunk)
    except OSError:
        raise ImageNotHeld(f"{directory}: blob {digest} is missing") from None
    if hasher.hexdigest() != expected or length != size:
        raise ImageNotHeld(f"{directory}: blob {digest} does not match its digest and size")
    return length
