"""The warmer's sightings: which images a Pod names are worth warming, asked of the registry fake."""

from __future__ import annotations

import pytest

from tests.support.fake_registry import FakeRegistries, FakeRegistry
from tests.support.warm_requests import DIGEST
from webhook.config import parse_config
from webhook.registry.resolver import Resolver
from webhook.warmer.sightings import Sightings

SETTINGS = {
    "ccr": {"registry": "ccr.local"},
    "upstreams": [{"registry": "docker.io"}, {"registry": "ghcr.io", "prefix": "gh"}],
}


def sightings(policy=None, ccr_digests=()):
    config = parse_config({**SETTINGS, "policy": policy or {}})
    registries = FakeRegistries(FakeRegistry({("library/nginx", "1.25"): DIGEST}), FakeRegistry(held=ccr_digests))
    return Sightings(config, Resolver(config, registries), timeout=5), registries


def test_sightings_warm_mirrors_of_configured_upstreams_only():
    checker, registries = sightings(ccr_digests=[("gh/org/tool", DIGEST)])
    tag, pinned_ccr, present, forged, bad, missing = checker.check(
        [
            "nginx:1.25",
            f"ccr.local/docker.io/library/redis:7@{DIGEST}",
            f"ghcr.io/org/tool@{DIGEST}",
            f"evil.example.com/x@{DIGEST}",
            "Not An Image",
            "nginx:9",
        ]
    )
    assert tag.wanted and str(tag.request.target) == f"ccr.local/docker.io/library/nginx:1.25@{DIGEST}"
    assert str(pinned_ccr.request.source) == f"docker.io/library/redis:7@{DIGEST}" and pinned_ccr.wanted
    assert present.in_ccr is True and not present.wanted
    assert "not a configured upstream" in forged.problem and not forged.retry_later
    assert bad.problem and not bad.wanted
    assert "cannot resolve" in missing.problem and missing.retry_later
    assert set(registries.hosts) <= {"docker.io", "ghcr.io"}


@pytest.mark.parametrize(
    ("policy", "problem"),
    [({"copy": "none"}, "policy.copy is none"), ({"exclude": ["docker.io/library/*"]}, "excluded")],
)
def test_sightings_respect_copy_none_and_exclude(policy, problem):
    checker, registries = sightings(policy)
    (sighting,) = checker.check(["nginx:1.25"])
    assert problem in sighting.problem and not sighting.wanted and registries.hosts == []
