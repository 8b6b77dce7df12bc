"""What travels with an image: its cosign signatures (`sha256-<hex>.sig`) and its OCI 1.1 referrers (signature
bundles, SBOMs, attestations), copied by the one copy engine after the image itself.

So `cosign verify` against the CCR's copy succeeds, and admission checks an image the CCR holds there. Each
piece is an image of its own to the engine (blobs first, manifests after, verified by digest). A target
without the referrers API (distribution 2.8) gets the referrers tag schema's `sha256-<hex>` index, merged
with what it already lists; one with the API indexes the copied referrers by their `subject` itself. At most
`MAX_REFERRERS` referrers are copied per image: an index of thousands is cut there, not walked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webhook.policy.signatures import referrers_tag, signature_tag
from webhook.registry.client import OCI_INDEX, Manifest, RegistryClient
from webhook.registry.errors import NotFound, RegistryProtocolError
from webhook.registry.signatures import referrers

MAX_REFERRERS = 64


@dataclass(frozen=True, slots=True)
class TravelledWith:
    """What went along with an image: whether its `.sig` tag did, and the referrers copied (and left out)."""

    signature_tag: bool
    referrers: tuple[str, ...]
    referrers_left_out: int = 0


CopyOne = Callable[[str, str | None], Any]
"""Copy one manifest (a digest) from the source repository into the target one, tagged as given."""


def copy_attached(
    source: RegistryClient,
    source_repository: str,
    digest: str,
    target: RegistryClient,
    target_repository: str,
    copy_one: CopyOne,
) -> TravelledWith:
    """Copy what is attached to `digest` in the source (its `.sig` tag, its referrers) into the target."""
    tag = signature_tag(digest)
    try:
        signed = source.resolve_digest(source_repository, tag)
    except NotFound:
        signed = None
    if signed is not None:
        copy_one(signed, tag)
    unique = referrers(source, source_repository, digest)
    kept = unique[:MAX_REFERRERS]
    for entry in kept:
        copy_one(entry["digest"], None)
    if kept and target.referrers(target_repository, digest) is None:
        _list_in_referrers_tag(target, target_repository, digest, kept)
    return TravelledWith(signed is not None, tuple(entry["digest"] for entry in kept), len(unique) - len(kept))


def _list_in_referrers_tag(target: RegistryClient, repository: str, digest: str, copied: list[dict[str, Any]]) -> None:
    """Add the copied referrers to the target's `sha256-<hex>` index (made if missing), each once, as listed."""
    tag = referrers_tag(digest)
    try:
        index = _document(target.get_manifest(repository, tag))
    except NotFound:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    listed = index.setdefault("manifests", [])
    present = {entry.get("digest") for entry in listed if isinstance(entry, dict)}
    listed.extend(entry for entry in copied if entry["digest"] not in present)
    data = json.dumps(index, separators=(",", ":")).encode()
    target.put_manifest(repository, tag, data, OCI_INDEX)


def _document(manifest: Manifest) -> dict[str, Any]:
    document = json.loads(manifest.data)
    if not isinstance(document, dict):
        raise RegistryProtocolError(f"index {manifest.digest}: not a JSON object")
    return document
