"""What an image manifest or index refers to, read from its JSON: the blobs and child manifests a copy must bring.

Pure functions over bytes already fetched (no I/O), so the copy engine's walk is tested with plain values
and a registry's answer is checked before anything is copied: every descriptor must carry a valid digest
and size, or the manifest is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from webhook.policy.reference import is_digest
from webhook.registry.client import Manifest
from webhook.registry.errors import RegistryProtocolError

# Layers a registry never holds (Windows base layers): pulled from their `urls`, so a copy leaves them be.
_NON_DISTRIBUTABLE = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.",
)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content reference inside a manifest: the digest, the size, and what kind of content it is."""

    digest: str
    size: int
    media_type: str


def child_manifests(index: Manifest) -> list[Descriptor]:
    """The manifests an index or manifest list names (every platform, attestations included), in order."""
    return [_descriptor(entry, index, "manifests") for entry in _document(index).get("manifests") or []]


def image_blobs(manifest: Manifest) -> list[Descriptor]:
    """The config and layers of an image manifest that the registry stores (non-distributable layers left out)."""
    document = _document(manifest)
    config = document.get("config")
    if config is None:
        raise _invalid(manifest, "it has no config descriptor")
    layers = [_descriptor(entry, manifest, "layers") for entry in document.get("layers") or []]
    return [_descriptor(config, manifest, "config")] + [layer for layer in layers if not _non_distributable(layer)]


def _non_distributable(descriptor: Descriptor) -> bool:
    return descriptor.media_type.startswith(_NON_DISTRIBUTABLE)


def _document(manifest: Manifest) -> dict[str, Any]:
    document = json.loads(manifest.data)  # the registry client has already checked that it is JSON
    if not isinstance(document, dict):
        raise _invalid(manifest, "it is not a JSON object")
    return document


def _descriptor(entry: object, manifest: Manifest, field: str) -> Descriptor:
    if not isinstance(entry, dict):
        raise _invalid(manifest, f"an entry of {field} is not an object")
    digest, size, media_type = entry.get("digest"), entry.get("size"), entry.get("mediaType", "")
    if not isinstance(digest, str) or not is_digest(digest):
        raise _invalid(manifest, f"an entry of {field} has no valid digest ({str(digest)[:80]!r})")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(manifest, f"{digest} in {field} has no valid size")
    return Descriptor(digest, size, media_type if isinstance(media_type, str) else "")


def _invalid(manifest: Manifest, why: str) -> RegistryProtocolError:
    return RegistryProtocolError(f"manifest {manifest.digest} cannot be copied: {why}")
