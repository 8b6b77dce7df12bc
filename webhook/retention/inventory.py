"""What the CCR holds, read through the registry API: every image, its manifests, blobs with sizes, and build time.

The registry API lists repositories and tags, not manifests, so the images retention can see are the
tagged ones, their index children, and untagged digests the caller already knows of (those that usage
tracking has seen named). Deletes need no more: what is never seen is never deleted.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.registry import Manifest
from webhook.registry_errors import NotFound, RegistryProtocolError
from webhook.registry_streams import BlobStream

MAX_CONFIG_BYTES = 1024 * 1024
_FRACTION = re.compile(r"(\.[0-9]{6})[0-9]+")


class CCRReader(Protocol):
    """What the inventory asks of the CCR's registry client."""

    def catalog(self) -> list[str]: ...

    def list_tags(self, repository: str) -> list[str]: ...

    def resolve_digest(self, repository: str, reference: str) -> str: ...

    def has_manifest(self, repository: str, digest: str) -> bool: ...

    def get_manifest(self, repository: str, reference: str) -> Manifest: ...

    def open_blob(self, repository: str, digest: str) -> BlobStream: ...


@dataclass(frozen=True)
class StoredImage:
    """One image in the CCR: its top manifest (or index) by digest, its tags, and every manifest under it.

    `manifests` maps the top digest and each child manifest digest to the blobs that manifest stores
    (itself included, since distribution keeps manifests as blobs), with their sizes. `created` is the
    newest `created` time of its configs, in seconds since the epoch, or None when no config says.
    """

    repository: str
    digest: str
    tags: tuple[str, ...]
    manifests: Mapping[str, Mapping[str, int]]
    created: float | None

    @property
    def children(self) -> tuple[str, ...]:
        """The child manifests of an index (empty for a single manifest)."""
        return tuple(digest for digest in self.manifests if digest != self.digest)

    @property
    def blobs(self) -> dict[str, int]:
        """Every blob of the image (manifests, configs, layers), with its size."""
        return {digest: size for blobs in self.manifests.values() for digest, size in blobs.items()}


def read_inventory(ccr: CCRReader, known: Iterable[tuple[str, str]] = ()) -> list[StoredImage]:
    """Every tagged image of the CCR, and each untagged (repository, digest) of `known` it holds that is no child of those."""
    images: list[StoredImage] = []
    repositories = ccr.catalog()
    extra: dict[str, set[str]] = {}
    for repository, digest in known:
        extra.setdefault(repository, set()).add(digest)
    for repository in sorted(set(repositories) | set(extra)):
        tags_by_digest = _tags_by_digest(ccr, repository)
        found = [_read_image(ccr, repository, digest, tuple(tags)) for digest, tags in tags_by_digest.items()]
        seen = {digest for image in found if image is not None for digest in image.manifests}
        for digest in sorted(extra.get(repository, set()) - seen):
            image = _read_image(ccr, repository, digest, ()) if ccr.has_manifest(repository, digest) else None
            if image is not None:
                found.append(image)
                seen.update(image.manifests)
        images.extend(image for image in found if image is not None)
    return images


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


def _read_image(ccr: CCRReader, repository: str, digest: str, tags: tuple[str, ...]) -> StoredImage | None:
    """The image at `repository@digest` with its manifests, blobs and build time; None if it is gone."""
    try:
        top = ccr.get_manifest(repository, digest)
        document = _document(top)
        manifests: dict[str, dict[str, int]] = {digest: {digest: len(top.data)}}
        created: list[float] = []
        children = [entry["digest"] for entry in document.get("manifests") or []] if top.is_index else [digest]
        for child in children:
            manifest = top if child == digest else ccr.get_manifest(repository, child)
            child_document = _document(manifest)
            config = child_document.get("config") or {}
            blobs = manifests.setdefault(child, {child: len(manifest.data)})
            for entry in [config, *(child_document.get("layers") or [])]:
                if "digest" in entry:
                    blobs[entry["digest"]] = int(entry.get("size") or 0)
            when = _created(ccr, repository, config)
            if when is not None:
                created.append(when)
    except NotFound:
        return None
    return StoredImage(repository, digest, tags, manifests, max(created) if created else None)


def _document(manifest: Manifest) -> dict[str, Any]:
    document = json.loads(manifest.data)
    if not isinstance(document, dict):
        raise RegistryProtocolError(f"manifest {manifest.digest} is not a JSON object")
    return document


def _created(ccr: CCRReader, repository: str, config: Mapping[str, Any]) -> float | None:
    """The `created` time in an image config blob, in seconds since the epoch; None if absent or unreadable."""
    digest, size = config.get("digest"), config.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or size > MAX_CONFIG_BYTES:
        return None
    with ccr.open_blob(repository, digest) as stream:
        data = b"".join(iter(lambda: stream.read(), b""))
    try:
        text = json.loads(data).get("created")
        return datetime.datetime.fromisoformat(_FRACTION.sub(r"\1", text)).timestamp() if isinstance(text, str) else None
    except (ValueError, AttributeError):
        return None
