"""Find an image's cosign signatures in a registry and check them: the I/O edge of `policy/signatures.py`.

Where cosign puts them: the classic `sha256-<hex>.sig` tag beside the image (a manifest of simple-signing
layers), then OCI 1.1 referrers of the digest (the referrers API, or the `sha256-<hex>` tag of the referrers
tag schema when the registry has none) whose artifact type is a sigstore bundle. The classic tag is read
first and the referrers only when it holds no valid signature, so a signed image costs two or three
requests. Everything is bounded: at most `MAX_SIGNATURES` signatures examined (a referrers index of
thousands is refused, not walked), each payload at most `MAX_PAYLOAD_BYTES`, the whole lookup within
`timeout` seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.policy.signatures import (
    BUNDLE_MEDIA_TYPE,
    MAX_PAYLOAD_BYTES,
    MAX_SIGNATURES,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    Evidence,
    Kind,
    PublicKey,
    Verdict,
    referrers_tag,
    signature_tag,
    verify_digest,
)
from webhook.registry.client import Manifest
from webhook.registry.errors import NotFound, RegistryProtocolError, RegistryUnavailable
from webhook.registry.oci import Descriptor, child_manifests

_KEPT = ("artifactType", "annotations")  # what discovery filters on, kept with each referrer


class SignatureReader(Protocol):
    """What finding signatures asks of a registry client."""

    def get_manifest(self, repository: str, reference: str, timeout: float | None = None) -> Manifest: ...

    def referrers(self, repository: str, digest: str, timeout: float | None = None) -> Manifest | None: ...

    def read_blob(self, repository: str, digest: str, limit: int, timeout: float | None = None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Layer:
    """A signature layer named by a manifest: its blob, size, media type and annotations."""

    digest: str
    size: int
    media_type: str
    annotations: dict[str, str]


def referrers(
    client: SignatureReader, repository: str, digest: str, timeout: float | None = None
) -> list[dict[str, Any]]:
    """The referrers of `digest`, each distinct one once, as index entries (mediaType, digest, size, artifactType,
    annotations): from the referrers API, else the referrers tag schema's `sha256-<hex>` index, else none.

    Every entry is checked (a valid digest and size) before any is used; RegistryProtocolError if one is not.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    index = client.referrers(repository, digest, timeout)
    if index is None:  # no referrers API
        try:
            left = None if deadline is None else _left(deadline, "referrers tag")
            index = client.get_manifest(repository, referrers_tag(digest), left)
        except NotFound:
            return []
    raw = _document(index, f"referrers of {digest}").get("manifests") or []
    unique: dict[str, dict[str, Any]] = {}
    for descriptor, entry in zip(child_manifests(index), raw, strict=True):
        kept = {key: entry[key] for key in _KEPT if key in entry}
        unique.setdefault(descriptor.digest, {**_entry_of(descriptor), **kept})
    return list(unique.values())


def _entry_of(descriptor: Descriptor) -> dict[str, Any]:
    """A descriptor as an index lists it."""
    return {"mediaType": descriptor.media_type, "digest": descriptor.digest, "size": descriptor.size}


def check_signatures(
    client: SignatureReader, repository: str, digest: str, keys: Sequence[PublicKey], timeout: float
) -> Verdict:
    """Whether `repository@digest` carries a valid signature by one of `keys` in `client`'s registry.

    Raises the registry's error when it cannot be asked (down, 401, a malformed answer), so the caller can tell
    "unsigned" from "unknown".
    """
    deadline = time.monotonic() + timeout
    found = _Found()
    found.add(_classic(client, repository, digest, deadline))
    verdict = verify_digest(digest, found.evidence, keys, found.skipped)
    if verdict.valid:
        return verdict
    found.add(_bundles(client, repository, digest, deadline, MAX_SIGNATURES - len(found.evidence)))
    return verify_digest(digest, found.evidence, keys, found.skipped)


class _Found:
    """The signatures read so far, and how many the caps left unread."""

    def __init__(self) -> None:
        self.evidence: list[Evidence] = []
        self.skipped = 0

    def add(self, pieces: Iterator[Evidence | int]) -> None:
        """Take what a reader yields: evidence, or counts of signatures not read."""
        for piece in pieces:
            if isinstance(piece, int):
                self.skipped += piece
            else:
                self.evidence.append(piece)


def _classic(client: SignatureReader, repository: str, digest: str, deadline: float) -> Iterator[Evidence | int]:
    """The simple-signing layers of the `.sig` tag (an int: how many were left unread, over a cap)."""
    tag = signature_tag(digest)
    try:
        manifest = client.get_manifest(repository, tag, _left(deadline, tag))
    except NotFound:
        return
    layers = [layer for layer in _layers(manifest, tag) if layer.media_type == SIMPLE_SIGNING]
    yield from _read(client, repository, layers, deadline, MAX_SIGNATURES, tag)


def _bundles(
    client: SignatureReader, repository: str, digest: str, deadline: float, room: int
) -> Iterator[Evidence | int]:
    """The sigstore bundles among the referrers of `digest`, at most `room` of them read."""
    entries = referrers(client, repository, digest, _left(deadline, "referrers"))
    candidates = [entry["digest"] for entry in entries if entry.get("artifactType") == BUNDLE_MEDIA_TYPE]
    if len(candidates) > room:
        yield len(candidates) - max(room, 0)
    for referrer in candidates[: max(room, 0)]:
        manifest = client.get_manifest(repository, referrer, _left(deadline, referrer))
        layers = [layer for layer in _layers(manifest, referrer) if layer.media_type == BUNDLE_MEDIA_TYPE]
        yield from _read(client, repository, layers[:1], deadline, 1, f"referrer {referrer}")


def _read(
    client: SignatureReader,
    repository: str,
    layers: list[Layer],
    deadline: float,
    cap: int,
    label: str,
) -> Iterator[Evidence | int]:
    """Evidence from each layer's blob, at most `cap`, none over MAX_PAYLOAD_BYTES (an int: how many were not read)."""
    readable = [layer for layer in layers if layer.size <= MAX_PAYLOAD_BYTES]
    unread = len(layers) - len(readable) + max(0, len(readable) - cap)
    if unread:
        yield unread
    blobs: dict[str, bytes] = {}  # cosign's layers often share one payload: read it once
    for i, layer in enumerate(readable[:cap]):
        if layer.digest not in blobs:
            blobs[layer.digest] = client.read_blob(
                repository, layer.digest, MAX_PAYLOAD_BYTES, _left(deadline, layer.digest)
            )
        kind = Kind.SIMPLE_SIGNING if layer.media_type == SIMPLE_SIGNING else Kind.BUNDLE
        yield Evidence(kind, blobs[layer.digest], layer.annotations.get(SIGNATURE_ANNOTATION), f"{label} layer {i}")


def _layers(manifest: Manifest, what: str) -> list[Layer]:
    layers = _document(manifest, what).get("layers") or []
    if not isinstance(layers, list):
        raise RegistryProtocolError(f"{what}: layers is not a list")
    found = []
    for entry in layers:
        entry = _object(entry, what)
        digest, size, annotations = entry.get("digest"), entry.get("size"), entry.get("annotations") or {}
        if not isinstance(digest, str) or not isinstance(size, int) or not isinstance(annotations, dict):
            raise RegistryProtocolError(f"{what}: a layer without a digest, a size or valid annotations")
        media_type = entry.get("mediaType")
        found.append(Layer(digest, size, media_type if isinstance(media_type, str) else "", annotations))
    return found


def _document(manifest: Manifest, what: str) -> dict[str, Any]:
    try:
        return _object(json.loads(manifest.data), what)
    except ValueError:
        raise RegistryProtocolError(f"{what}: not JSON") from None


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RegistryProtocolError(f"{what}: not a JSON object")
    return value


def _left(deadline: float, what: str) -> float:
    """The seconds left before `deadline`; RegistryUnavailable once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise RegistryUnavailable(f"signatures: the lookup's deadline passed before {what}")
    return left
