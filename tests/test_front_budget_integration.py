"""The storage budget at a real front (`ccr-webhook front`) between two real distribution registries.

A cold blob that fits is served and committed, and its bytes count at once: the next one that would not fit
is refused with a 507 DENIED saying why, counted as `over-budget`, never written to the CCR. A warm reading
through the front (as the warmer does by default) fails with that answer, and its Event says so in words.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import urllib3

from tests.support.local_registry import client as make_client
from tests.support.waiting import wait_until
from tests.support.warm_requests import warm_request
from webhook.copier.engine import CopyError, copy_image
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image
from webhook.warmer.events import FAILED, warm_event
from webhook.warmer.queue import JobState, WarmJob

pytestmark = pytest.mark.integration

BUDGET = 20_000
LAYER = 12_000  # one fits under the budget, two do not


@pytest.fixture
def front(upstream: RegistryServer, empty_ccr: RegistryServer) -> Iterator[LocalFront]:
    settings = {
        "ccr": {"registry": "ccr.test", "endpoint": empty_ccr.url, "insecure": True},
        "upstreams": [{"registry": "upstream.test", "endpoint": upstream.url, "insecure": True, "prefix": "up"}],
        "retention": {"maxBytes": BUDGET},
    }
    front = LocalFront(settings).start()
    try:
        yield front
    finally:
        front.cleanup()


def layer_of(upstream: RegistryServer, repository: str, seed: int) -> tuple[str, str]:
    """Push a one-layer image of LAYER bytes upstream; (its digest, its layer's digest)."""
    source = make_client(upstream.url)
    image = push_sample_image(source, repository, "v1", [LAYER], seed=seed)
    manifest = json.loads(source.get_manifest(repository, image.digest).data)
    return image.digest, manifest["layers"][0]["digest"]


def over_budget_fetches(front: LocalFront) -> float:
    text = urllib3.request("GET", f"{front.url}/metrics").data.decode()
    for line in text.splitlines():
        if line.startswith('ccr_front_fetches_total{outcome="over-budget"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_cold_blob_past_the_budget_is_refused_and_a_committed_one_counts(
    upstream: RegistryServer, empty_ccr: RegistryServer, front: LocalFront
) -> None:
    _, first = layer_of(upstream, "apps/one", seed=501)
    _, second = layer_of(upstream, "apps/two", seed=502)
    ccr = make_client(empty_ccr.url)

    fitted = urllib3.request("GET", f"{front.url}/v2/up/apps/one/blobs/{first}")
    assert fitted.status == 200 and len(fitted.data) == LAYER
    wait_until(lambda: ccr.blob_size("up/apps/one", first) == LAYER, what="the first blob committed")

    # The CCR was read empty a moment ago (and is read again only after a minute): what refuses the second
    # blob is the first one's commit, counted as it happened.
    refused = urllib3.request("GET", f"{front.url}/v2/up/apps/two/blobs/{second}")
    assert refused.status == 507 and "Retry-After" not in refused.headers
    (error,) = json.loads(refused.data)["errors"]
    assert error["code"] == "DENIED"
    assert error["message"] == (
        "the CCR holds 11.7 KiB of its 19.5 KiB budget (retention.maxBytes); 11.7 KiB more does not fit. "
        "Retention evicts unused images at its next run; or raise retention.maxBytes"
    )
    assert over_budget_fetches(front) == 1
    assert ccr.blob_size("up/apps/two", second) is None  # nothing written, not even in part
    head = urllib3.request("HEAD", f"{front.url}/v2/up/apps/two/blobs/{second}")
    assert head.status == 200  # asking about a blob writes nothing: still answered


def test_a_warm_through_the_front_over_the_budget_fails_with_an_event_that_says_why(
    upstream: RegistryServer, empty_ccr: RegistryServer, front: LocalFront
) -> None:
    image = push_sample_image(make_client(upstream.url), "apps/big", "v1", [BUDGET + 1], seed=504)
    through_front = make_client(front.url)
    with pytest.raises(CopyError) as failed:
        copy_image(through_front, "up/apps/big", image.digest, make_client(empty_ccr.url), "up/apps/big")
    assert not failed.value.retryable
    job = WarmJob(warm_request(), state=JobState.FAILED, attempts=1, error=str(failed.value))
    job.failure = failed.value
    reason, kind, message = warm_event(job)
    assert (reason, kind) == (FAILED, "Warning")
    assert "(1 attempt): the CCR is over its storage budget (retention.maxBytes): the CCR holds " in message
    assert "more does not fit. Retention evicts unused images at its next run; or raise retention.maxBytes" in message
