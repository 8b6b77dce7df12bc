"""OCI 1.1 referrers through a real front (`ccr-webhook front`), over real distribution registries.

distribution 2.8 has no referrers API: where neither the CCR nor the upstream has one, the front answers 404
(as the spec asks) and the client's fallback, the `sha256-<hex>` tag of the referrers tag schema, works
through the front like any manifest. Where one has it (a proxy lends the registry the API from that same
tag), the CCR's list is relayed and the upstream is not asked; else the upstream's is served, filtered by
`artifactType` when asked (and said so), and an upstream answering no index is a 502, never passed on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import urllib3

from tests.support.local_registry import client as make_client
from tests.support.registry_proxy import RegistryProxy
from webhook.policy.signatures import BUNDLE_MEDIA_TYPE
from webhook.registry.client import OCI_INDEX
from webhook.registry.signatures import referrers_tag
from webhook.testing.cosign import new_key, sign_image
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration


@pytest.fixture
def proxies(upstream: RegistryServer, empty_ccr: RegistryServer) -> Iterator[tuple[RegistryProxy, RegistryProxy]]:
    """Proxies in front of the upstream and the CCR registry, without the referrers API until a test lends it."""
    pair = RegistryProxy(upstream.host).start(), RegistryProxy(empty_ccr.host).start()
    try:
        yield pair
    finally:
        for proxy in pair:
            proxy.stop()


@pytest.fixture
def front(proxies: tuple[RegistryProxy, RegistryProxy]) -> Iterator[LocalFront]:
    upstream, ccr = proxies
    settings = {
        "ccr": {"registry": "ccr.test", "endpoint": ccr.url, "insecure": True},
        "upstreams": [{"registry": "upstream.test", "endpoint": upstream.url, "insecure": True, "prefix": "up"}],
    }
    front = LocalFront(settings).start()
    try:
        yield front
    finally:
        front.cleanup()


def signed(registry: RegistryServer, repository: str, seed: int) -> str:
    """Push an image and a cosign bundle referrer of it (listed in its referrers tag); the image's digest."""
    client = make_client(registry.url)
    digest = push_sample_image(client, repository, "v1", [2048], seed=seed).digest
    sign_image(client, repository, digest, new_key(), bundle=True)
    return digest


def get(front: LocalFront, path: str, accept: str = OCI_INDEX) -> urllib3.BaseHTTPResponse:
    return urllib3.request("GET", front.url + path, headers={"Accept": accept}, redirect=False)


def referrers_asked(proxy: RegistryProxy) -> list[str]:
    return [path for _, path, _ in proxy.requests if "/referrers/" in path]


def test_without_the_api_anywhere_the_answer_is_404_and_the_tag_schema_works_through_the_front(
    upstream: RegistryServer, front: LocalFront
) -> None:
    digest = signed(upstream, "apps/plain", seed=601)
    answer = get(front, f"/v2/up/apps/plain/referrers/{digest}")
    assert answer.status == 404 and json.loads(answer.data)["errors"][0]["code"] == "UNSUPPORTED"
    listed = get(front, f"/v2/up/apps/plain/manifests/{referrers_tag(digest)}")  # the client's fallback
    assert listed.status == 200 and listed.headers["Content-Type"] == OCI_INDEX
    assert listed.data == make_client(upstream.url).get_manifest("apps/plain", referrers_tag(digest)).data
    (entry,) = json.loads(listed.data)["manifests"]
    assert entry["artifactType"] == BUNDLE_MEDIA_TYPE
    assert get(front, f"/v2/up/apps/plain/manifests/{entry['digest']}").status == 200  # and the referrer itself


def test_the_upstream_list_is_served_when_the_ccr_has_none_and_filtered_by_artifact_type(
    upstream: RegistryServer, proxies: tuple[RegistryProxy, RegistryProxy], front: LocalFront
) -> None:
    upstream_proxy, _ = proxies
    upstream_proxy.referrers_api = True
    digest = signed(upstream, "apps/listed", seed=602)
    answer = get(front, f"/v2/up/apps/listed/referrers/{digest}")
    assert answer.status == 200 and answer.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in answer.headers
    assert [entry["artifactType"] for entry in json.loads(answer.data)["manifests"]] == [BUNDLE_MEDIA_TYPE]
    kept = get(front, f"/v2/up/apps/listed/referrers/{digest}?artifactType={BUNDLE_MEDIA_TYPE.replace('+', '%2B')}")
    assert kept.headers["OCI-Filters-Applied"] == "artifactType" and len(json.loads(kept.data)["manifests"]) == 1
    other = get(front, f"/v2/up/apps/listed/referrers/{digest}?artifactType=application/spdx%2Bjson")
    assert other.headers["OCI-Filters-Applied"] == "artifactType" and json.loads(other.data)["manifests"] == []
    head = urllib3.request("HEAD", f"{front.url}/v2/up/apps/listed/referrers/{digest}")
    assert head.status == 200 and head.headers["Content-Length"] == str(len(answer.data))

    upstream_proxy.faults.append((200, {}))  # an upstream answering no index at all
    broken = get(front, f"/v2/up/apps/listed/referrers/{digest}")
    assert broken.status == 502 and json.loads(broken.data)["errors"][0]["code"] == "UNAVAILABLE"


def test_the_ccr_list_is_relayed_when_it_has_the_api_and_upstream_is_not_asked(
    empty_ccr: RegistryServer, proxies: tuple[RegistryProxy, RegistryProxy], front: LocalFront
) -> None:
    upstream_proxy, ccr_proxy = proxies
    upstream_proxy.referrers_api = ccr_proxy.referrers_api = True
    digest = signed(empty_ccr, "up/apps/held", seed=603)  # in the CCR already, with its signature
    answer = get(front, f"/v2/up/apps/held/referrers/{digest}")
    assert answer.status == 200 and len(json.loads(answer.data)["manifests"]) == 1
    assert referrers_asked(ccr_proxy) == [f"/v2/up/apps/held/referrers/{digest}"]
    assert referrers_asked(upstream_proxy) == []
    outside = get(front, f"/v2/elsewhere/app/referrers/{digest}")  # the CCR's own list, under no prefix
    assert outside.status == 200 and json.loads(outside.data)["manifests"] == []
    assert referrers_asked(upstream_proxy) == []


def test_a_repository_under_no_prefix_never_reaches_an_upstream(
    proxies: tuple[RegistryProxy, RegistryProxy], front: LocalFront
) -> None:
    upstream_proxy, _ = proxies
    upstream_proxy.referrers_api = True
    answer = get(front, "/v2/elsewhere/app/referrers/sha256:" + "a" * 64)
    assert answer.status == 404 and json.loads(answer.data)["errors"][0]["code"] == "UNSUPPORTED"
    assert upstream_proxy.requests == []
