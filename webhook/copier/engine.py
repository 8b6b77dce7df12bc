"""The copy engine: one image (an index with every platform, or a single manifest) from a registry into another.

The order keeps the target consistent at every moment: all blobs first (streamed, verified, in parallel),
then the child manifests by digest, then the index (or the manifest) by digest, the tag last, so the target
never holds a manifest whose content is missing. Manifests go over byte for byte and keep their digests.
A copy that fails after pushing a manifest deletes what it pushed (what was there before stays); one that
fails earlier has pushed no manifest. Copying an image the target already holds costs two or three HEADs.

A tag in the target only ever points where the source's tag was verified to point: with `source_tag`,
the tag is set only if the source's tag resolves to the copied digest just before it is set; otherwise
the image is stored by digest only. The `copy` limits (children per index, manifest bytes and blobs
per image, each blob's minimum rate) are checked before anything outgrows them, and a copy over one
fails with a CopyLimitExceeded naming the configuration key.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from webhook.config import CopyConfig
from webhook.copier.blobs import BlobCopier, BlobLocations, BlobOutcome
from webhook.copier.retry import TRANSIENT_ERRORS, RetryPolicy
from webhook.copier.signatures import TravelledWith, copy_attached
from webhook.errors import CCRWebhookError
from webhook.policy.decide import WarmRequest
from webhook.registry.client import MANIFEST_MEDIA_TYPES, Manifest, Registries, RegistryClient
from webhook.registry.errors import NotFound, RegistryError, RegistryNotAllowed, RegistryProtocolError
from webhook.registry.oci import Descriptor, child_manifests, image_blobs
from webhook.registry.streams import MinimumRate

T = TypeVar("T")
DEFAULT_LIMITS = CopyConfig()
DEFAULT_RETRY = RetryPolicy()
MAX_INDEX_DEPTH = 4  # an index of indexes is allowed, an endless one is not
_BLOB_LOCATIONS = BlobLocations()  # what this process has copied where: the sources of cross-repository mounts


@dataclass(frozen=True, slots=True)
class CopyProgress:
    """Where a copy stands, for a progress display; bytes_done counts blobs however they got there."""

    image: str
    phase: str  # "blobs", "manifests" or "done"
    blobs_total: int
    blobs_done: int
    bytes_total: int
    bytes_done: int
    bytes_copied: int  # streamed by this copy so far
    seconds: float

    @property
    def rate(self) -> float:
        """Bytes streamed per second so far."""
        return self.bytes_copied / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What a copy did: the image digest, the manifests it pushed (children first), how each blob got there."""

    digest: str
    manifests: tuple[str, ...]
    blobs_copied: int
    blobs_skipped: int
    blobs_mounted: int
    bytes_copied: int
    seconds: float
    tag: str | None = None  # the target tag now on the image; None: stored by digest only
    attached: TravelledWith | None = None  # its signatures and referrers, when asked to bring them


class CopyLimitExceeded(RegistryProtocolError):
    """The image is larger than a `copy` limit allows (too many children, manifest bytes or blobs)."""


class CopyError(CCRWebhookError):
    """A copy failed: the message names the image and the step; `retryable` says whether trying later may help."""

    def __init__(self, image: str, step: str, cause: BaseException, leftovers: Iterable[str] = ()) -> None:
        self.image = image
        self.step = step
        self.retryable = isinstance(cause, TRANSIENT_ERRORS)
        self.retry_after: float | None = getattr(cause, "retry_after", None)
        left = ", ".join(leftovers)
        note = f"; the manifests it pushed could not be removed: {left}" if left else ""
        super().__init__(f"copy {image}: {step}: {cause}{note}")


def copy_image(
    source: RegistryClient,
    source_repository: str,
    reference: str,
    target: RegistryClient,
    target_repository: str,
    *,
    tag: str | None = None,
    concurrency: int = 4,
    known_repositories: Iterable[str] = (),
    progress: Callable[[CopyProgress], None] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    source_tag: str | None = None,
    limits: CopyConfig = DEFAULT_LIMITS,
    attached: bool = False,
) -> CopyResult:
    """Copy image `reference` (a tag or digest) into `target_repository`, tagged `tag` if given; CopyError if not.

    `source_tag` makes `tag` a mirror of the source's tag: set only while that tag names the copied digest.
    `attached` brings the image's cosign signatures and OCI referrers along, after the image (copier/signatures.py).
    `known_repositories` are target repositories that may hold some of the blobs (mounted, not copied);
    `concurrency` blobs move at once; `progress` hears every change, from the copy's threads; `limits`
    bound what one image may hold and how slowly its blobs may arrive.
    """
    return _Copy(
        source,
        source_repository,
        reference,
        target,
        target_repository,
        tag=tag,
        concurrency=concurrency,
        known_repositories=tuple(known_repositories),
        progress=progress,
        retry=retry,
        source_tag=source_tag,
        limits=limits,
        attached=attached,
    ).run()


def copy_warm_request(registries: Registries, request: WarmRequest, **options: Any) -> CopyResult:
    """Copy a warm request's pinned upstream image into the CCR by digest, tagged only while upstream's tag names it.

    With a CCR front to read through (warmer.throughFront), the image is read from the front under its CCR name
    rather than from the upstream, so the front's one fetch from upstream serves the warm and the nodes alike
    (the front commits it too; blobs and manifests go by digest, so the two commits agree).
    """
    source, target = request.source, request.target
    try:
        upstream = registries.upstream(source.registry)
    except RegistryNotAllowed as err:
        raise CopyError(f"{source} to {target}", "choose the upstream registry", err) from err
    front = registries.front
    reader, repository = (front, target.repository) if front is not None else (upstream, source.repository)
    return copy_image(
        reader,
        repository,
        source.digest or source.tag or "latest",
        registries.ccr,
        target.repository,
        tag=target.tag,
        source_tag=source.tag,
        attached=True,
        **options,
    )


def _image_name(client: RegistryClient, repository: str, reference: str | None) -> str:
    """`host/repository:tag` or `host/repository@digest`, for messages (never with credentials)."""
    host = urllib.parse.urlsplit(client.endpoint).netloc.rpartition("@")[2]
    if reference is None:
        return f"{host}/{repository}"
    return f"{host}/{repository}{'@' if ':' in reference else ':'}{reference}"


class _Tally:
    """The counts of a copy in progress, shared by its threads; tells `progress` of every change."""

    def __init__(self, image: str, progress: Callable[[CopyProgress], None] | None) -> None:
        self._image, self._progress = image, progress
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._phase = "blobs"
        self._blobs_total = self._bytes_total = self._bytes_finished = 0
        self._in_flight: dict[str, int] = {}
        self.outcomes: dict[BlobOutcome, list[Descriptor]] = {outcome: [] for outcome in BlobOutcome}

    @property
    def seconds(self) -> float:
        """Seconds since the copy started."""
        return time.monotonic() - self._started

    def begin(self, blobs: list[Descriptor]) -> None:
        """The blobs to bring over are known."""
        with self._lock:
            self._blobs_total, self._bytes_total = len(blobs), sum(blob.size for blob in blobs)
            self._report()

    def sending(self, blob: Descriptor) -> Callable[[int], None]:
        """The callback that hears how far the current pass over `blob` has got."""

        def sent(count: int) -> None:
            with self._lock:
                self._in_flight[blob.digest] = count
                self._report()

        return sent

    def finished(self, blob: Descriptor, outcome: BlobOutcome) -> None:
        """`blob` is in the target, by `outcome`."""
        with self._lock:
            self._in_flight.pop(blob.digest, None)
            self.outcomes[outcome].append(blob)
            self._bytes_finished += blob.size
            self._report()

    def phase(self, name: str) -> None:
        """The copy moved on to phase `name`."""
        with self._lock:
            self._phase = name
            self._report()

    def bytes_copied(self) -> int:
        """Bytes of the blobs copied (not skipped or mounted) so far."""
        return sum(blob.size for blob in self.outcomes[BlobOutcome.COPIED])

    def _report(self) -> None:
        if self._progress is None:
            return
        in_flight = sum(self._in_flight.values())
        self._progress(
            CopyProgress(
                self._image,
                self._phase,
                self._blobs_total,
                sum(map(len, self.outcomes.values())),
                self._bytes_total,
                self._bytes_finished + in_flight,
                self.bytes_copied() + in_flight,
                self.seconds,
            )
        )


class _Copy:
    """One copy_image call: its settings, its progress, and the manifests it has pushed so far."""

    def __init__(
        self,
        source: RegistryClient,
        source_repository: str,
        reference: str,
        target: RegistryClient,
        target_repository: str,
        *,
        tag: str | None,
        concurrency: int,
        known_repositories: tuple[str, ...],
        progress: Callable[[CopyProgress], None] | None,
        retry: RetryPolicy,
        source_tag: str | None,
        limits: CopyConfig,
        attached: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.source, self.source_repository, self.reference = source, source_repository, reference
        self.target, self.target_repository, self.tag = target, target_repository, tag
        self.concurrency, self.retry = concurrency, retry
        self.source_tag, self.limits, self.attached = source_tag, limits, attached
        self.name = (
            f"{_image_name(source, source_repository, reference)} to {_image_name(target, target_repository, tag)}"
        )
        self.tally = _Tally(self.name, progress)
        self.stop = threading.Event()
        pace = MinimumRate(
            limits.minimum_rate_bytes,
            limits.minimum_rate_window_seconds,
            limits.blob_deadline_seconds,
            "copy.minimumRateBytes per copy.minimumRateWindowSeconds, copy.blobDeadlineSeconds",
        )
        self.blobs = BlobCopier(
            source,
            source_repository,
            target,
            target_repository,
            _BLOB_LOCATIONS,
            known_repositories,
            retry,
            self.stop,
            pace,
        )
        self.pushed: list[str] = []
        self.manifest_bytes = 0  # fetched so far, over every manifest of the image
        self.lock = threading.Lock()

    def run(self) -> CopyResult:
        result = self._image()
        if not self.attached:
            return result
        travelled = self._step("copy its signatures and referrers", lambda: self._attached(result.digest))
        return replace(result, attached=travelled)

    def _attached(self, digest: str) -> TravelledWith:
        """Copy the signatures and referrers of `digest`, each one an image copy of its own."""

        def copy_one(reference: str, tag: str | None) -> CopyResult:
            return copy_image(
                self.source,
                self.source_repository,
                reference,
                self.target,
                self.target_repository,
                tag=tag,
                source_tag=tag,
                concurrency=self.concurrency,
                retry=self.retry,
                limits=self.limits,
            )

        # A signature or referrer that fails to copy raises its own CopyError, naming it, through the step.
        return copy_attached(self.source, self.source_repository, digest, self.target, self.target_repository, copy_one)

    def _image(self) -> CopyResult:
        digest = self.reference
        if ":" not in digest:
            digest = self._step(
                f"resolve {self.reference}", lambda: self.source.resolve_digest(self.source_repository, self.reference)
            )
        if self._step("check the target", lambda: self.target.has_manifest(self.target_repository, digest)):
            tag = self._verified_tag(digest)
            self._retag(digest, tag)
            return self._result(digest, tag)
        top = self._step(f"read manifest {digest}", lambda: self._fetch(digest))
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="copy") as pool:
            try:
                manifests = self._walk(top, pool, depth=0)
                self._copy_blobs(manifests, pool)
            except BaseException:
                self.stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        tag = self._verified_tag(digest)
        self._push_manifests(manifests, tag)
        self.tally.phase("done")
        return self._result(digest, tag)

    def _verified_tag(self, digest: str) -> str | None:
        """The tag to set on `digest`: `tag`, unless it mirrors a source tag that names another digest now (or none)."""
        mirrored = self.source_tag
        if self.tag is None or mirrored is None:
            return self.tag
        try:
            now = self._step(
                f"resolve {mirrored} in the source",
                lambda: self.source.resolve_digest(self.source_repository, mirrored),
            )
        except CopyError as err:
            if isinstance(err.__cause__, NotFound):
                return None
            raise
        return self.tag if now == digest else None

    def _result(self, digest: str, tag: str | None) -> CopyResult:
        outcomes = self.tally.outcomes
        return CopyResult(
            digest,
            tuple(self.pushed),
            len(outcomes[BlobOutcome.COPIED]),
            len(outcomes[BlobOutcome.SKIPPED]),
            len(outcomes[BlobOutcome.MOUNTED]),
            self.tally.bytes_copied(),
            self.tally.seconds,
            tag,
        )

    def _step(self, step: str, operation: Callable[[], T]) -> T:
        """Run one retried step; a failure becomes a CopyError naming the image and the step."""
        try:
            return self.retry.run(operation, self.stop)
        except (RegistryError, ValueError) as err:
            raise CopyError(self.name, step, err) from err

    def _retag(self, digest: str, tag: str | None) -> None:
        """Point `tag` at `digest`, which the target holds already, unless it points there now."""
        if tag is None or self._step(f"resolve {tag} in the target", lambda: self._tagged(tag)) == digest:
            return
        manifest = self._step(
            f"read manifest {digest} in the target", lambda: self.target.get_manifest(self.target_repository, digest)
        )
        self._step(f"tag {digest} as {tag}", lambda: self._put(manifest, tag))

    def _tagged(self, tag: str) -> str | None:
        try:
            return self.target.resolve_digest(self.target_repository, tag)
        except NotFound:
            return None

    def _fetch(self, digest: str, expected: Descriptor | None = None) -> Manifest:
        """Manifest `digest` from the source (digest-checked by the client), refused if no registry takes its type."""
        manifest = self.source.get_manifest(self.source_repository, digest)
        with self.lock:
            self.manifest_bytes += len(manifest.data)
            total = self.manifest_bytes
        if total > self.limits.max_manifest_bytes_per_image:
            raise CopyLimitExceeded(
                f"its manifests are over {self.limits.max_manifest_bytes_per_image} bytes together "
                f"(copy.maxManifestBytesPerImage); {total} bytes read so far"
            )
        if manifest.media_type not in MANIFEST_MEDIA_TYPES:
            raise RegistryProtocolError(
                f"manifest {digest} has media type {manifest.media_type!r}, which is not "
                f"copied (only {', '.join(MANIFEST_MEDIA_TYPES)})"
            )
        if expected is not None and expected.size != len(manifest.data):
            raise RegistryProtocolError(
                f"manifest {digest} is {len(manifest.data)} bytes, its index says {expected.size}"
            )
        return manifest

    def _walk(self, manifest: Manifest, pool: ThreadPoolExecutor, depth: int) -> list[Manifest]:
        """`manifest` and every manifest below it, children before parents (the order they are pushed in)."""
        if not manifest.is_index:
            return [manifest]
        if depth >= MAX_INDEX_DEPTH:
            raise CopyError(
                self.name,
                f"read index {manifest.digest}",
                RegistryProtocolError(f"indexes nested deeper than {MAX_INDEX_DEPTH} levels"),
            )
        entries = self._step(f"read index {manifest.digest}", lambda: child_manifests(manifest))
        if len(entries) > self.limits.max_index_children:
            raise CopyError(
                self.name,
                f"read index {manifest.digest}",
                CopyLimitExceeded(
                    f"the index lists {len(entries)} manifests, more than copy.maxIndexChildren "
                    f"({self.limits.max_index_children})"
                ),
            )
        unique = list({entry.digest: entry for entry in entries}.values())
        children = pool.map(
            lambda entry: self._step(f"read manifest {entry.digest}", lambda: self._fetch(entry.digest, entry)), unique
        )
        ordered = [below for child in list(children) for below in self._walk(child, pool, depth + 1)]
        return list({found.digest: found for found in [*ordered, manifest]}.values())

    def _copy_blobs(self, manifests: list[Manifest], pool: ThreadPoolExecutor) -> None:
        """Bring every blob of every image manifest over, the biggest first; the first failure stops the rest."""
        blobs: dict[str, Descriptor] = {}
        for manifest in manifests:
            if not manifest.is_index:
                for blob in self._step(f"read manifest {manifest.digest}", partial(image_blobs, manifest)):
                    blobs.setdefault(blob.digest, blob)
        if len(blobs) > self.limits.max_blobs_per_image:
            raise CopyError(
                self.name,
                "list the blobs",
                CopyLimitExceeded(
                    f"the image has {len(blobs)} blobs, more than copy.maxBlobsPerImage "
                    f"({self.limits.max_blobs_per_image})"
                ),
            )
        ordered = sorted(blobs.values(), key=lambda blob: blob.size, reverse=True)
        self.tally.begin(ordered)
        futures: dict[Future[BlobOutcome], Descriptor] = {
            pool.submit(self.blobs.copy, blob, self.tally.sending(blob)): blob for blob in ordered
        }
        for future in as_completed(futures):
            blob = futures[future]
            try:
                outcome = future.result()
            except (RegistryError, ValueError) as err:
                raise CopyError(self.name, f"copy blob {blob.digest} ({blob.size} bytes)", err) from err
            self.tally.finished(blob, outcome)

    def _push_manifests(self, manifests: list[Manifest], tag: str | None) -> None:
        """Push the child manifests the target lacks, then the top one, then `tag`; undo them all on failure."""
        self.tally.phase("manifests")
        *children, top = manifests
        step = ""
        try:
            for manifest in children:
                step = f"push manifest {manifest.digest}"
                held = partial(self.target.has_manifest, self.target_repository, manifest.digest)
                if not self.retry.run(held, self.stop):
                    self.retry.run(partial(self._put, manifest, manifest.digest), self.stop)
            step = f"push manifest {top.digest}"
            self.retry.run(lambda: self._put(top, top.digest), self.stop)
            if tag is not None:
                step = f"tag {top.digest} as {tag}"
                self.retry.run(lambda: self._put(top, tag), self.stop)
        except (RegistryError, ValueError) as err:
            raise CopyError(self.name, step, err, leftovers=self._roll_back()) from err

    def _put(self, manifest: Manifest, reference: str) -> None:
        """Push `manifest` byte for byte under `reference`; the target must store it under the same digest."""
        stored = self.target.put_manifest(self.target_repository, reference, manifest.data, manifest.media_type)
        if stored != manifest.digest:
            raise RegistryProtocolError(
                f"manifest {manifest.digest} was stored as {stored}",
                endpoint=self.target.endpoint,
                repository=self.target_repository,
            )
        if reference == manifest.digest:
            self.pushed.append(manifest.digest)

    def _roll_back(self) -> list[str]:
        """Delete the manifests this copy pushed, parents first; the digests that could not be deleted."""
        leftovers = []
        for digest in reversed(self.pushed):
            try:
                self.retry.run(partial(self.target.delete_manifest, self.target_repository, digest))
            except NotFound:
                continue
            except RegistryError:
                leftovers.append(digest)
        self.pushed.clear()
        return leftovers
