"""The one in-process stand-in for a registry client, for tests that need timing and call counts exact.

It answers the calls the resolver, the sightings and `check` make (resolve_digest, has_manifest) the way
webhook.registry.client.RegistryClient does against a real registry; tests/test_fake_registry.py holds it to that.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from webhook.registry.errors import NotFound


class FakeRegistry:
    """Knows some tags ((repository, tag) -> digest) and holds some manifests ((repository, digest)).

    Every call is recorded in `calls` as (method, repository, reference); clearing `gate` holds every call until
    it is set again (10 s at most); `error`, when set, is raised by every call instead of an answer.
    """

    def __init__(
        self,
        tags: Mapping[tuple[str, str], str] | None = None,
        held: Iterable[tuple[str, str]] = (),
        error: Exception | None = None,
    ) -> None:
        self.tags = dict(tags or {})
        self.held = set(held)
        self.error = error
        self.calls: list[tuple[str, str, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def resolve_digest(self, repository: str, reference: str, timeout: float | None = None) -> str:
        """The digest `reference` (a tag, or a held digest) names; NotFound as the real client raises it."""
        self._called("resolve_digest", repository, reference)
        if (repository, reference) in self.held:
            return reference
        if (repository, reference) not in self.tags:
            raise NotFound("manifest", reference, repository=repository)
        return self.tags[repository, reference]

    def has_manifest(self, repository: str, digest: str, timeout: float | None = None) -> bool:
        """Whether manifest `digest` is held in `repository`."""
        self._called("has_manifest", repository, digest)
        return (repository, digest) in self.held

    def _called(self, method: str, repository: str, reference: str) -> None:
        with self._lock:
            self.calls.append((method, repository, reference))
        self.gate.wait(10)
        if self.error is not None:
            raise self.error


class FakeRegistries:
    """The shape of webhook.registry.client.Registries over fakes: one upstream for every registry, and the CCR.

    `hosts` records every upstream registry asked for, so a test can tell which ones were never contacted.
    """

    def __init__(self, upstream: FakeRegistry, ccr: FakeRegistry) -> None:
        self.ccr = ccr
        self._upstream = upstream
        self.hosts: list[str] = []

    def upstream(self, registry: str) -> FakeRegistry:
        """The upstream client for `registry` (the same fake for all)."""
        self.hosts.append(registry)
        return self._upstream
