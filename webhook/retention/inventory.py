"""What the CCR holds, read through the registry API: every image, its manifests, blobs with sizes, and build time.

The registry API lists repositories and tags, not manifests, so the images retention can see are the
tagged ones, their index children, and untagged digests the caller already knows of (those that usage
tracking has seen named). Deletes need no more: what is never seen is never deleted. Only repositories
under a configured upstream's prefix are read at all: the CCR may hold other repositories beside what
ccr-webhook mirrored, and those are not retention's to judge.

A manifest whose every tag names it an attachment of a digest (cosign's `sha256-<hex>.sig`, `.att`, `.sbom`,
the referrers tag schema's `sha256-<hex>` index and so the referrers it lists; `policy/signatures.attachment_of`)
is no image: it is read as an `Attachment` of the image holding that digest, or, when none does, an orphan.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from webhook.policy.signatures import Attached, attachment_of
from webhook.registry.client import Manifest
from webhook.registry.errors import NotFound, RegistryProtocolError
from webhook.registry.oci import Descriptor, child_manifests, image_blobs
from webhook.registry.streams import BlobStream

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1024 * 1024
MAX_BUILD_TIMES = 65536  # configs remembered; far more than a CCR's images, and a few MiB at most
_FRACTION = re.compile(r"(\.[0-9]{6})[0-9]+")


class CCRReader(Protocol):
    """What the inventory asks of the CCR's registry client."""

    def catalog(self) -> list[str]: ...

    def list_tags(self, repository: str) -> list[str]: ...

    def resolve_digest(self, repository: str, reference: str) -> str: ...

    def has_manifest(self, repository: str, digest: str) -> bool: ...

    def get_manifest(self, repository: str, reference: str) -> Manifest: ...

    def open_blob(self, repository: str, digest: str) -> BlobStream: ...


Manifests = Mapping[str, Mapping[str, int]]  # manifest digest -> the blobs it stores (itself included), with sizes


@dataclass(frozen=True)
class Attachment:
    """A manifest the CCR holds as an attachment of `subject` (a manifest digest), by its tags: a signature,
    attestation or SBOM tag, or a referrers index (whose child manifests, the referrers, go with it)."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    subject: str
    kind: Attached
    manifests: Manifests

    @property
    def referrers(self) -> int:
        """How many referrers a referrers index lists (0 for any other kind)."""
        return len(self.manifests) - 1 if self.kind is Attached.REFERRERS else 0

    @property
    def blobs(self) -> dict[str, int]:
        """Every blob of the attachment (manifests, configs, payloads), with its size."""
        return {digest: size for blobs in self.manifests.values() for digest, size in blobs.items()}


@dataclass(frozen=True)
class StoredImage:
    """One image in the CCR: its top manifest (or index) by digest, its tags, every manifest under it, and what is
    attached to it.

    `manifests` maps the top digest and each child manifest digest to the blobs that manifest stores
    (itself included, since distribution keeps manifests as blobs), with their sizes. `created` is the
    newest `created` time of its configs, in seconds since the epoch, or None when no config says.
    `attachments` (signatures, referrers) are attached to one of `manifests`: kept and evicted with the image.
    """

    repository: str
    digest: str
    tags: tuple[str, ...]
    manifests: Manifests
    created: float | None
    attachments: tuple[Attachment, ...] = ()

    @property
    def children(self) -> tuple[str, ...]:
        """The child manifests of an index (empty for a single manifest)."""
        return tuple(digest for digest in self.manifests if digest != self.digest)

    @property
    def attached_manifests(self) -> dict[str, Mapping[str, int]]:
        """The manifests of its attachments (each attachment's top first), with their blobs."""
        return {digest: blobs for attachment in self.attachments for digest, blobs in attachment.manifests.items()}

    @property
    def blobs(self) -> dict[str, int]:
        """Every blob of the image and its attachments (manifests, configs, layers), with its size."""
        manifests = (*self.manifests.values(), *self.attached_manifests.values())
        return {digest: size for blobs in manifests for digest, size in blobs.items()}


@dataclass(frozen=True)
class Inventory:
    """What the CCR holds: the images (their attachments with them), and attachments whose subject is gone."""

    images: list[StoredImage]
    orphans: list[Attachment]


class BuildTimes:
    """The `created` time of image configs by config digest, each read from the CCR once: a config never changes.

    Bounded: past `max_entries` the least recently asked is forgotten (and read again if asked again).
    """

    def __init__(self, max_entries: int = MAX_BUILD_TIMES) -> None:
        self._max_entries = max_entries
        self._times: OrderedDict[str, float | None] = OrderedDict()

    def created(self, ccr: CCRReader, repository: str, config: Descriptor) -> float | None:
        """The `created` time of `config`, from memory or from the CCR (None when absent or unreadable)."""
        if config.digest in self._times:
            self._times.move_to_end(config.digest)
            return self._times[config.digest]
        when = _created(ccr, repository, config)
        self._times[config.digest] = when
        if len(self._times) > self._max_entries:
            self._times.popitem(last=False)
        return when


def read_inventory(
    ccr: CCRReader,
    prefixes: Iterable[str],
    known: Iterable[tuple[str, str]] = (),
    build_times: BuildTimes | None = None,
) -> Inventory:
    """Every tagged image under `prefixes` in the CCR with its attachments, each untagged (repository, digest) of
    `known` there, and the attachments whose subject the CCR no longer holds.

    An untagged image that is a child of a tagged one is read with its parent, not on its own. Build times come
    from `build_times` when it knows the config (pass the same one run after run), else from the CCR.
    """
    build_times = build_times or BuildTimes()
    inventory = Inventory([], [])
    mirrored = tuple(prefix.strip("/") + "/" for prefix in prefixes)
    extra: dict[str, set[str]] = {}
    for repository, digest in known:
        extra.setdefault(repository, set()).add(digest)
    repositories = {repository for repository in {*ccr.catalog(), *extra} if repository.startswith(mirrored)}
    for repository in sorted(repositories):
        tags_by_digest = _tags_by_digest(ccr, repository)
        attached = {digest: tags for digest, tags in tags_by_digest.items() if _attachment_tags(tags)}
        found = [
            _read_image(ccr, repository, digest, tuple(tags), build_times)
            for digest, tags in tags_by_digest.items()
            if digest not in attached
        ]
        seen = {digest for image in found if image is not None for digest in image.manifests} | set(attached)
        for digest in sorted(extra.get(repository, set()) - seen):
            image = (
                _read_image(ccr, repository, digest, (), build_times) if ccr.has_manifest(repository, digest) else None
            )
            if image is not None:
                found.append(image)
                seen.update(image.manifests)
        images = [image for image in found if image is not None]
        attachments = (_read_attachment(ccr, repository, digest, tuple(tags)) for digest, tags in attached.items())
        _attach(images, [attachment for attachment in attachments if attachment is not None], inventory)
    return inventory


def _attachment_tags(tags: list[str]) -> bool:
    """Whether every one of `tags` names an attachment (so the manifest they name is no image)."""
    return all(attachment_of(tag) is not None for tag in tags)


def _attach(images: list[StoredImage], attachments: list[Attachment], inventory: Inventory) -> None:
    """Add `images` of one repository to `inventory`, each with the attachments whose subject is one of its
    manifests (an image's own top manifest first) or of its attachments (a signed SBOM referrer); the attachments
    whose subject none holds are orphans."""
    holder: dict[str, int] = {}
    for position, image in enumerate(images):
        for digest in image.manifests:
            if digest == image.digest or digest not in holder:
                holder[digest] = position
    attached: dict[int, list[Attachment]] = {}
    pending, waiting = attachments, []
    while pending:  # each pass attaches at least one, or ends
        for attachment in pending:
            if attachment.subject not in holder:
                waiting.append(attachment)
                continue
            position = holder[attachment.subject]
            attached.setdefault(position, []).append(attachment)
            holder.update(dict.fromkeys(attachment.manifests.keys() - holder.keys(), position))
        if len(waiting) == len(pending):
            break
        pending, waiting = waiting, []
    inventory.orphans.extend(pending)
    inventory.images.extend(
        dataclasses.replace(image, attachments=tuple(attached[position])) if position in attached else image
        for position, image in enumerate(images)
    )


def _tags_by_digest(ccr: CCRReader, repository: str) -> dict[str, list[str]]:
    """The digest each tag of `repository` points at, grouped; tags deleted meanwhile are skipped."""
    found: dict[str, list[str]] = {}
    try:
        tags = ccr.list_tags(repository)
    except NotFound:
        return found
    for tag in sorted(tags):
        try:
            found.setdefault(ccr.resolve_digest(repository, tag), []).append(tag)
        except NotFound:
            continue
    return found


def _read_image(
    ccr: CCRReader, repository: str, digest: str, tags: tuple[str, ...], build_times: BuildTimes
) -> StoredImage | None:
    """The image at `repository@digest` with its manifests, blobs and build time; None if gone or unreadable."""
    read = _read_manifests(ccr, repository, digest, build_times)
    return None if read is None else StoredImage(repository, digest, tags, *read)


def _read_attachment(ccr: CCRReader, repository: str, digest: str, tags: tuple[str, ...]) -> Attachment | None:
    """The attachment at `repository@digest` (every tag of `tags` names one) with its manifests and blobs."""
    named = attachment_of(tags[0])
    read = _read_manifests(ccr, repository, digest, None)
    if named is None or read is None:
        return None
    return Attachment(repository, digest, tags, named.subject, named.kind, read[0])


def _read_manifests(
    ccr: CCRReader, repository: str, digest: str, build_times: BuildTimes | None
) -> tuple[Manifests, float | None] | None:
    """The manifests at and under `repository@digest` with their blobs (each child read once), and the newest
    `created` time of their configs (read only with `build_times`); None if gone or unreadable."""
    try:
        top = ccr.get_manifest(repository, digest)
        manifests: dict[str, dict[str, int]] = {digest: {digest: len(top.data)}}
        created: list[float] = []
        children = dict.fromkeys(child.digest for child in child_manifests(top)) if top.is_index else {}
        platforms = [ccr.get_manifest(repository, child) for child in children] if top.is_index else [top]
        for manifest in platforms:
            blobs = manifests.setdefault(manifest.digest, {manifest.digest: len(manifest.data)})
            if manifest.is_index:  # an index inside an index: kept with its parent, never looked into
                continue
            config, *layers = image_blobs(manifest)
            blobs.update({blob.digest: blob.size for blob in (config, *layers)})
            when = None if build_times is None else build_times.created(ccr, repository, config)
            if when is not None:
                created.append(when)
    except NotFound:
        return None
    except RegistryProtocolError as err:
        log.warning("retention: %s@%s cannot be read, so it is kept: %s", repository, digest, err)
        return None
    return manifests, max(created) if created else None


def _created(ccr: CCRReader, repository: str, config: Descriptor) -> float | None:
    """The `created` time in an image config blob, in seconds since the epoch; None if absent or unreadable."""
    if config.size > MAX_CONFIG_BYTES:
        return None
    with ccr.open_blob(repository, config.digest) as stream:
        data = b"".join(iter(lambda: stream.read(), b""))
    try:
        text = json.loads(data).get("created")
        return (
            datetime.datetime.fromisoformat(_FRACTION.sub(r"\1", text)).timestamp() if isinstance(text, str) else None
        )
    except (ValueError, AttributeError):
        return None
