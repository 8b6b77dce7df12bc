"""The registry fake answers as the real client does against a real distribution registry, so the tests that
use it for exact timing and counts (resolver, sightings, `check`) stand on the registry's real behaviour."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.fake_registry import FakeRegistry
from tests.support.local_registry import client
from webhook.registry.errors import RegistryError
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration

ABSENT = "sha256:" + "0" * 64


def answer(call: Callable[[], object]) -> object:
    """What a call answers, or the error it raises as the parts callers act on (type, kind, reference, repository)."""
    try:
        return call()
    except RegistryError as err:
        return type(err).__name__, getattr(err, "kind", None), getattr(err, "reference", None), err.repository


def answers(registry: object, digest: str, child: str) -> list[object]:
    """The answers to the calls the fake's users make: by tag, by digest, of manifests held or not, with a timeout."""
    return [
        answer(lambda: registry.resolve_digest("team/app", "1.0")),
        answer(lambda: registry.resolve_digest("team/app", "1.0", timeout=5)),
        answer(lambda: registry.resolve_digest("team/app", digest)),
        answer(lambda: registry.resolve_digest("team/app", "9.9")),
        answer(lambda: registry.resolve_digest("team/none", "1.0")),
        answer(lambda: registry.has_manifest("team/app", digest)),
        answer(lambda: registry.has_manifest("team/app", child, timeout=5)),
        answer(lambda: registry.has_manifest("team/app", ABSENT)),
        answer(lambda: registry.has_manifest("team/none", digest)),
    ]


def test_the_fake_answers_every_call_as_a_real_registry_does(empty_ccr: RegistryServer) -> None:
    real = client(empty_ccr.url)
    pushed = push_sample_image(real, "team/app", "1.0", [512], seed=41, platforms=2)
    [child, _] = pushed.manifests
    fake = FakeRegistry({("team/app", "1.0"): pushed.digest}, held=[("team/app", pushed.digest), ("team/app", child)])
    expected = answers(real, pushed.digest, child)
    assert answers(fake, pushed.digest, child) == expected
    assert expected[0] == pushed.digest and expected[3] == ("NotFound", "manifest", "9.9", "team/app")  # not vacuous
