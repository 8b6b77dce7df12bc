"""Committing what the front fetched into the CCR: each verified blob from its spool file, then the image.

A blob goes in through the registry client's upload path (the copy engine's too) straight from the spool.
An image is committed by the one copy engine once every blob of every manifest below it is in the CCR:
the commit first brings each blob in through a flight (joining one a node started, or starting it), then
runs copy_image, which finds every blob present and pushes the child manifests, the index and the tag
last, undoing its manifests on failure. So the CCR never shows a manifest with a missing blob, and a tag
goes in only where upstream's tag was resolved and verified to point.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from webhook.copier.engine import MAX_INDEX_DEPTH, CopyError, copy_image
from webhook.front.flights import CHUNK_BYTES, Flight, FlightFailed, Flights, FlightState
from webhook.front.peers import committed_by_owner
from webhook.front.upstream import Origin, UpstreamManifests
from webhook.registry.client import Manifest, RegistryClient
from webhook.registry.errors import RegistryError
from webhook.registry.oci import Descriptor, child_manifests, image_blobs

log = logging.getLogger("webhook.front")
MAX_COMMITS = 64  # images being committed at once; more are left to the next pull or the warmer


class SpooledBlob:
    """A spool file as a re-iterable upload body (the client may read it twice to fall back to chunked PATCHes)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __iter__(self) -> Iterator[bytes]:
        with open(self._path, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk


def commit_blob(ccr: RegistryClient, flight: Flight) -> None:
    """Upload `flight`'s verified spool file into its CCR repository (unless its owner has already)."""
    assert flight.path is not None and flight.size is not None and flight.state is FlightState.VERIFIED
    if flight.source is not None and committed_by_owner(ccr, flight):
        return  # streamed from its owner, which commits it: two uploads of one blob at once only cost
    ccr.upload_blob(flight.origin.target_repository, flight.digest, flight.size, SpooledBlob(flight.path))


class ImageCommits:
    """Image commits in the background, one per (CCR repository, digest, tag) at a time, at most MAX_COMMITS."""

    def __init__(self, ccr: RegistryClient, flights: Flights, manifests: UpstreamManifests) -> None:
        self._ccr, self._flights, self._manifests = ccr, flights, manifests
        self._running: set[tuple[str, str, str | None]] = set()
        self._lock = threading.Lock()

    def start(self, origin: Origin, manifest: Manifest, tag: str | None) -> None:
        """Commit image `manifest` of `origin` into the CCR (tagged `tag`, verified upstream), unless one runs."""
        key = (origin.target_repository, manifest.digest, tag)
        with self._lock:
            if key in self._running or len(self._running) >= MAX_COMMITS:
                return
            self._running.add(key)
        threading.Thread(
            target=self._run, args=(key, origin, manifest, tag), name=f"commit-{manifest.digest[7:19]}", daemon=True
        ).start()

    def _run(self, key: tuple[str, str, str | None], origin: Origin, manifest: Manifest, tag: str | None) -> None:
        try:
            if not self._ccr.has_manifest(origin.target_repository, manifest.digest):
                self._bring_blobs(origin, manifest)
            # Every blob is in now: the engine skips them, pushes the manifests children first, the tag last.
            copy_image(
                origin.client,
                origin.repository,
                manifest.digest,
                self._ccr,
                origin.target_repository,
                tag=tag,
                attached=True,  # its signatures and referrers too, so admission verifies the CCR's copy
            )
            log.info("committed %s@%s from %s", origin.target_repository, manifest.digest, origin.registry)
        except (FlightFailed, RegistryError, CopyError, ValueError) as err:
            log.warning("not committed: %s@%s: %s", origin.target_repository, manifest.digest, err)
        finally:
            with self._lock:
                self._running.discard(key)

    def _bring_blobs(self, origin: Origin, manifest: Manifest) -> None:
        """Every blob below `manifest` into the CCR through the flights; FlightFailed if one did not make it."""
        blobs: dict[str, Descriptor] = {}
        for image in self._image_manifests(origin, manifest, depth=0):
            for blob in image_blobs(image):
                blobs.setdefault(blob.digest, blob)
        flights = [self._flights.ensure(origin, blob.digest, blob.size) for blob in blobs.values()]
        for flight in flights:
            ended = flight.wait_ended(self._flights.reader_timeout)
            if ended is None:
                raise FlightFailed(f"blob {flight.digest}: not fetched within {self._flights.reader_timeout:g} s")
            if ended not in (FlightState.COMMITTED, FlightState.PRESENT):
                raise flight.error or FlightFailed(f"blob {flight.digest}: fetched but not committed")

    def _image_manifests(self, origin: Origin, manifest: Manifest, depth: int) -> list[Manifest]:
        """The image manifests at or below `manifest` (an index's children, fetched and verified by digest)."""
        if not manifest.is_index:
            return [manifest]
        if depth >= MAX_INDEX_DEPTH:
            raise FlightFailed(f"index {manifest.digest}: nested deeper than {MAX_INDEX_DEPTH} levels")
        found: list[Manifest] = []
        for entry in child_manifests(manifest):
            found += self._image_manifests(origin, self._manifests.fetch(origin, entry.digest), depth + 1)
        return found
