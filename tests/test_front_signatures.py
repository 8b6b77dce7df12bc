"""The CCR front commits an image's cosign signatures and referrers with it, so the CCR's copy verifies."""

from __future__ import annotations

import pytest
import urllib3

from tests.support.local_registry import client as make_client
from tests.support.waiting import wait_until
from webhook.policy.signatures import public_keys, referrers_tag, signature_tag
from webhook.registry.client import MANIFEST_MEDIA_TYPES, NotFound
from webhook.registry.errors import RegistryServerError
from webhook.registry.signatures import check_signatures
from webhook.testing.cosign import new_key, public_pem, sign_image
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration


def test_a_pull_through_the_front_brings_the_signatures_into_the_ccr(upstream: RegistryServer, ccr: RegistryServer):
    key = new_key()
    source, target = make_client(upstream.url), make_client(ccr.url)
    digest = push_sample_image(source, "apps/signed", "v1", [4096], seed=301).digest
    sign_image(source, "apps/signed", digest, key)
    sign_image(source, "apps/signed", digest, key, bundle=True)
    settings = {
        "ccr": {"registry": "ccr.test", "endpoint": ccr.url, "insecure": True},
        "upstreams": [{"registry": "upstream.test", "endpoint": upstream.url, "insecure": True, "prefix": "up"}],
    }
    front = LocalFront(settings).start()
    try:
        accept = ", ".join(MANIFEST_MEDIA_TYPES)
        pulled = urllib3.request(
            "GET", f"http://{front.host}/v2/up/apps/signed/manifests/v1", headers={"Accept": accept}
        )
        assert pulled.status == 200 and pulled.headers["Docker-Content-Digest"] == digest

        def held(tag: str) -> bool:
            try:
                return target.resolve_digest("up/apps/signed", tag) is not None
            except (NotFound, RegistryServerError):  # 500: an object being written, not yet
                return False

        wait_until(lambda: held(signature_tag(digest)) and held(referrers_tag(digest)), what="signatures committed")
    finally:
        front.cleanup()
    verdict = check_signatures(target, "up/apps/signed", digest, public_keys([public_pem(key)]), timeout=5)
    assert verdict.valid, verdict.reason
