"""From image strings (a Pod's, a hint's) to what the warmer copies: only mirrors of configured upstreams.

An image is warmed when it maps to a configured upstream (an upstream image, or its CCR name under the
upstream's prefix), is not excluded by policy, has a digest (a tag is resolved on the upstream first)
and the CCR does not hold it. Everything is checked against the warmer's own configuration, so neither a
Pod nor a forged hint can make it contact a registry that is not configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webhook.config import Config, CopyMode
from webhook.errors import CCRWebhookError
from webhook.policy.decide import (
    ImageFacts,
    Lookup,
    NotMirrored,
    WarmRequest,
    excluded_by,
    upstream_source,
    warm_request_for,
)
from webhook.policy.reference import InvalidImageReference
from webhook.registry.resolver import Resolver


class NotWarmed(CCRWebhookError):
    """An image the warmer does not copy, and why."""


@dataclass(frozen=True, slots=True)
class Sighting:
    """What the warmer makes of one image: the copy it would run, whether the CCR holds it, or why not."""

    image: str
    request: WarmRequest | None = None
    in_ccr: bool | None = None  # None: the CCR did not say in time
    problem: str | None = None
    retry_later: bool = False  # the problem may pass (a tag that could not be resolved now)

    @property
    def wanted(self) -> bool:
        """Whether this image should be copied now."""
        return self.request is not None and self.in_ccr is not True


def mirror_lookup(image: str, config: Config) -> Lookup:
    """The resolver lookup for an image the warmer may copy (its digest, the CCR's copy); NotWarmed if it may not."""
    if config.policy.copy is CopyMode.NONE:
        raise NotWarmed("policy.copy is none: nothing is copied")
    try:
        source = upstream_source(image, config)
    except (InvalidImageReference, NotMirrored) as err:
        raise NotWarmed(str(err)) from None
    pattern = excluded_by(source, config)
    if pattern is not None:
        raise NotWarmed(f"{image}: excluded by policy.exclude pattern {pattern!r}")
    upstream = config.upstream_for(source.registry)
    assert upstream is not None  # upstream_source checked it
    return Lookup(image, upstream, source, need_digest=source.digest is None, need_ccr=True)


class Sightings:
    """Turns images into Sightings, asking the registries (through the resolver's cache) at most `timeout` seconds."""

    def __init__(self, config: Config, resolver: Resolver, timeout: float) -> None:
        self._config = config
        self._resolver = resolver
        self._timeout = timeout

    def check(self, images: Sequence[str]) -> list[Sighting]:
        """One Sighting per image, in order."""
        sightings: list[Sighting | Lookup] = []
        for image in images:
            try:
                sightings.append(mirror_lookup(image, self._config))
            except NotWarmed as err:
                sightings.append(Sighting(image, problem=str(err)))
        lookups = [item for item in sightings if isinstance(item, Lookup)]
        facts = iter(self._resolver.gather(lookups, self._timeout) if lookups else ())
        return [self._sighting(item, next(facts)) if isinstance(item, Lookup) else item for item in sightings]

    def _sighting(self, lookup: Lookup, facts: ImageFacts) -> Sighting:
        digest = lookup.source.digest or facts.digest
        if digest is None:
            why = facts.resolve_error or "no answer"
            return Sighting(lookup.image, problem=f"cannot resolve {lookup.source}: {why}", retry_later=True)
        return Sighting(lookup.image, warm_request_for(lookup.source, digest, self._config), facts.in_ccr)
