"""The miss path's upstream side: which upstream a CCR repository mirrors, and its manifests, digest-verified.

Only a repository under a configured upstream's prefix (`<prefix>/<repository>`) has an origin; any other
name has none and no upstream is contacted for it. A tag is resolved upstream on every request and only the
manifest of the digest it resolves to now is served, fetched by that digest and checked against its bytes,
so a stale or poisoned tag is never served. Manifests are immutable by digest, so a few are kept. Clients
asking for one manifest at once share one upstream request (the tag's HEAD, then the manifest's GET).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from webhook.config import Config
from webhook.policy.decide import NotMirrored, upstream_source
from webhook.policy.reference import InvalidImageReference, is_digest
from webhook.registry.client import Manifest, Registries, RegistryClient
from webhook.registry.errors import RegistryUnavailable

MANIFEST_CACHE_ENTRIES = 64
MANIFEST_WAIT_SECONDS = 120.0  # a request waits this long at most for another's fetch of the same manifest
_T = TypeVar("_T")


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
    """Manifests fetched from upstreams and verified against their digest; a small cache of them by digest.

    Single flight: however many clients ask for one manifest at once, upstream is asked once (a tag's
    resolution, then the manifest by digest); the others wait for that answer, or its error."""

    def __init__(self, capacity: int = MANIFEST_CACHE_ENTRIES, wait_seconds: float = MANIFEST_WAIT_SECONDS) -> None:
        self._capacity, self._wait_seconds = capacity, wait_seconds
        self._cache: OrderedDict[tuple[str, ...], Manifest] = OrderedDict()
        self._asking: dict[tuple[str, ...], Future[Any]] = {}
        self._lock = threading.Lock()

    def fetch(self, origin: Origin, reference: str) -> Manifest:
        """The manifest `reference` names upstream now: a tag is resolved first, then fetched by that digest."""
        digest = reference
        if not is_digest(reference):
            tag = ("tag", origin.registry, origin.repository, reference)
            digest = self._shared(tag, lambda: origin.client.resolve_digest(origin.repository, reference))
        key = (origin.registry, origin.repository, digest)
        # the client checks the bytes against the digest; kept, since a digest's manifest never changes
        return self._shared(key, lambda: origin.client.get_manifest(origin.repository, digest), keep=True)

    def _shared(self, key: tuple[str, ...], ask: Callable[[], _T], keep: bool = False) -> _T:
        """`ask()`, or the answer of the one call for `key` under way (waited for up to the wait bound); `keep`: the
        answer is a manifest, kept by digest and answered from the cache from then on."""
        with self._lock:
            if keep and key in self._cache:
                self._cache.move_to_end(key)
                return cast(_T, self._cache[key])
            future = self._asking.get(key)
            mine = future is None
            if future is None:
                future = self._asking[key] = Future()
        if not mine:
            try:
                return cast(_T, future.result(timeout=self._wait_seconds))
            except FutureTimeout:
                raise RegistryUnavailable(
                    f"manifest {key[-1]}: another request's fetch did not end within {self._wait_seconds:g} s",
                    repository=key[-2],
                ) from None
        try:
            answer = ask()
        except BaseException as err:
            with self._lock:
                self._asking.pop(key, None)
            future.set_exception(err)
            raise
        with self._lock:  # kept and no longer asked in one step: a later request finds one or the other
            if keep:
                self._cache[key] = cast(Manifest, answer)
                while len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
            self._asking.pop(key, None)
        future.set_result(answer)
        return answer
