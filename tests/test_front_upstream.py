"""The front's upstream side in-process: which upstream a CCR repository mirrors, and one upstream request per
manifest however many clients ask for it at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import pytest

from tests.support.counted_future import CountedFuture
from tests.support.waiting import wait_until
from webhook.config import parse_config
from webhook.front import upstream as upstream_module
from webhook.front.upstream import UpstreamManifests, origin_for
from webhook.registry.client import Manifest, Registries
from webhook.registry.errors import NotFound

DIGEST = "sha256:" + "c" * 64
CLIENTS = 8


class CountingUpstream:
    """An upstream registry client that counts its calls and holds each until `gate` is set."""

    def __init__(self, missing: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.gate = threading.Event()
        self.missing = missing
        self._lock = threading.Lock()

    def _called(self, method: str, reference: str) -> None:
        with self._lock:
            self.calls.append((method, reference))
        assert self.gate.wait(10)
        if self.missing:
            raise NotFound("manifest", reference, repository="app")

    def resolve_digest(self, repository: str, reference: str) -> str:
        self._called("HEAD", reference)
        return DIGEST

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        self._called("GET", reference)
        return Manifest(b"{}", "application/vnd.oci.image.manifest.v1+json", reference)


def concurrently(count: int, work: Callable[[], Any]) -> tuple[list[threading.Thread], list[Any]]:
    """`work()` in `count` threads at once; each one's result or exception."""
    results: list[Any] = [None] * count

    def run(at: int) -> None:
        try:
            results[at] = work()
        except Exception as err:
            results[at] = err

    threads = [threading.Thread(target=run, args=(at,), daemon=True) for at in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


@pytest.fixture(autouse=True)
def counted_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    CountedFuture.waiting = 0
    monkeypatch.setattr(upstream_module, "Future", CountedFuture)


def all_but_one_waiting() -> None:
    wait_until(lambda: CountedFuture.waiting == CLIENTS - 1, what="every other client waiting on the first")


def origin(upstream: CountingUpstream) -> Any:
    return cast(Any, type("Origin", (), {"registry": "upstream.test", "repository": "app", "client": upstream})())


@pytest.mark.parametrize("reference", ["v1", DIGEST])
def test_clients_asking_at_once_share_one_upstream_request(reference: str) -> None:
    upstream, manifests = CountingUpstream(), UpstreamManifests()
    threads, results = concurrently(CLIENTS, lambda: manifests.fetch(origin(upstream), reference))
    all_but_one_waiting()
    upstream.gate.set()
    for thread in threads:
        thread.join(10)
    assert all(isinstance(result, Manifest) and result.digest == DIGEST for result in results)
    expected = [("HEAD", "v1"), ("GET", DIGEST)] if reference == "v1" else [("GET", DIGEST)]
    assert upstream.calls == expected
    manifests.fetch(origin(upstream), DIGEST)  # by digest it is kept now
    assert len(upstream.calls) == len(expected)


def test_an_error_reaches_every_client_that_waited_for_it() -> None:
    upstream, manifests = CountingUpstream(missing=True), UpstreamManifests()
    threads, results = concurrently(CLIENTS, lambda: manifests.fetch(origin(upstream), DIGEST))
    all_but_one_waiting()
    upstream.gate.set()
    for thread in threads:
        thread.join(10)
    assert all(isinstance(result, NotFound) for result in results) and len(upstream.calls) == 1
    upstream.missing = False
    assert manifests.fetch(origin(upstream), DIGEST).digest == DIGEST  # a failure is not remembered
    assert len(upstream.calls) == 2


def test_only_a_repository_under_an_upstream_prefix_has_an_origin() -> None:
    config = parse_config(
        {
            "ccr": {"registry": "ccr.test", "endpoint": "http://127.0.0.1:9", "insecure": True},
            "upstreams": [
                {"registry": "upstream.test", "endpoint": "http://127.0.0.1:9", "insecure": True, "prefix": "up"}
            ],
        }
    )
    registries = Registries(config)
    found = origin_for("up/team/app", config, registries)
    assert found is not None and (found.registry, found.repository, found.target_repository) == (
        "upstream.test",
        "team/app",
        "up/team/app",
    )
    assert origin_for("other/app", config, registries) is None
