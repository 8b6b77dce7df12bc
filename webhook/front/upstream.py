"""The miss path's upstream side: which upstream a CCR repository mirrors, and its manifests, digest-verified.

Only a repository under a configured upstream's prefix (`<prefix>/<repository>`) has an origin; any other
name has none and no upstream is contacted for it. A tag is resolved upstream on every request and only the
manifest of the digest it resolves to now is served, fetched by that digest and checked against its bytes,
so a stale or poisoned tag is never served. Manifests are immutable by digest, so a few are kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from webhook.config import Config
from webhook.policy.decide import NotMirrored, upstream_source
from webhook.policy.reference import InvalidImageReference, is_digest
from webhook.registry.client import Manifest, Registries, RegistryClient

MANIFEST_CACHE_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a CCR repository's content comes from: the upstream client and repository it mirrors."""

    target_repository: str  # the repository in the CCR (`<prefix>/<repository>`)
    registry: str
    client: RegistryClient
    repository: str


def origin_for(repository: str, config: Config, registries: Registries) -> Origin | None:
    """The upstream that CCR repository `repository` mirrors, or None when it is under no configured prefix."""
    try:
        source = upstream_source(f"{config.ccr.registry}/{repository}", config)
    except (NotMirrored, InvalidImageReference):
        return None
    if source.registry == config.ccr.registry:
        return None
    return Origin(repository, source.registry, registries.upstream(source.registry), source.repository)


class UpstreamManifests:
    """Manifests fetched from upstreams and verified against their digest; a small cache of them by digest."""

    def __init__(self, capacity: int = MANIFEST_CACHE_ENTRIES) -> None:
        self._capacity = capacity
        self._cache: OrderedDict[tuple[str, str, str], Manifest] = OrderedDict()
        self._lock = threading.Lock()

    def fetch(self, origin: Origin, reference: str) -> Manifest:
        """The manifest `reference` names upstream now: a tag is resolved first, then fetched by that digest."""
        digest = reference if is_digest(reference) else origin.client.resolve_digest(origin.repository, reference)
        key = (origin.registry, origin.repository, digest)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        manifest = origin.client.get_manifest(origin.repository, digest)  # the client checks bytes against digest
        with self._lock:
            self._cache[key] = manifest
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return manifest
