"""Content trust against real registries: cosign-layout signatures pushed to distribution, checked by
`registry/signatures.py`, carried into the CCR by the copy engine, and enforced by `ccr-webhook serve`
(gunicorn over TLS) at admission.

Signatures are made the way cosign makes them (webhook/testing/cosign.py); the pure check itself is also
tested against cosign's own vectors in test_signatures.py.
"""

import json
import time

import pytest

from tests.support.clock import Clock
from tests.support.waiting import deadline_ceiling
from webhook.config import parse_config
from webhook.copier.engine import copy_image
from webhook.copier.signatures import MAX_REFERRERS
from webhook.policy.decide import plan_image
from webhook.policy.signatures import (
    MAX_SIGNATURES,
    Failure,
    public_keys,
    referrers_tag,
    signature_tag,
    simple_signing_payload,
)
from webhook.registry.client import Registries, RegistryClient
from webhook.registry.resolver import Resolver
from webhook.registry.signatures import check_signatures
from webhook.testing.cosign import (
    classic_layer,
    new_key,
    public_pem,
    push_bundle_referrer,
    push_classic_signature,
    sign_bundle,
)
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.review_client import pod_object, pod_review, send_review
from webhook.testing.sample_image import push_sample_image
from webhook.testing.webhook_process import LocalWebhook

pytestmark = pytest.mark.integration

KEY, OTHER = new_key("ecdsa"), new_key("ecdsa")
KEYS = public_keys([public_pem(KEY)])
DEADLINE = 2.0
DOWN = f"127.0.0.1:{free_port()}"  # a configured upstream nothing listens on
BOMB, BOMB_DISTINCT = 5000, 40
NAMES = ("signed", "bundled", "tampered", "elsewhere", "wrongkey", "unsigned", "bomb", "mirrored")


def client(server):
    return RegistryClient(server.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=4)


@pytest.fixture(scope="module")
def scene():
    """An upstream holding one image per case, signed (or not) as its name says, and an empty CCR."""
    with RegistryServer() as upstream, RegistryServer() as ccr:
        up = client(upstream)
        digests = {
            name: push_sample_image(up, f"team/{name}", "1.0", [256], seed).digest for seed, name in enumerate(NAMES)
        }

        def classic(name, key=KEY, payload=None, digest=None):
            digest = digest or digests[name]
            payload, signature = classic_layer(key, digest, f"{upstream.host}/team/{name}", payload)
            push_classic_signature(up, f"team/{name}", digests[name], payload, signature)

        classic("signed")
        push_bundle_referrer(up, "team/bundled", digests["bundled"], sign_bundle(KEY, digests["bundled"]))
        payload = simple_signing_payload(digests["tampered"], f"{upstream.host}/team/tampered")
        altered = payload.replace(b'"optional":null', b'"optional":{"note":"altered"}')
        push_classic_signature(
            up, "team/tampered", digests["tampered"], altered, classic_layer(KEY, digests["tampered"], "", payload)[1]
        )
        classic("elsewhere", digest=digests["signed"])  # a valid signature, over another image's digest
        classic("wrongkey", key=OTHER)
        for n in range(BOMB_DISTINCT):  # thousands of entries, BOMB_DISTINCT distinct signature referrers
            repeats = BOMB - BOMB_DISTINCT + 1 if n == BOMB_DISTINCT - 1 else 1
            bundle = sign_bundle(OTHER, digests["bomb"])  # ECDSA signatures differ each time: distinct referrers
            push_bundle_referrer(up, "team/bomb", digests["bomb"], bundle, index_entries=repeats)
        # mirrored: unsigned upstream, but its copy in the CCR carries a signature (pushed there directly)
        ccr_client = client(ccr)
        push_sample_image(ccr_client, "up/team/mirrored", "1.0", [256], NAMES.index("mirrored"))
        payload, signature = classic_layer(KEY, digests["mirrored"], f"{ccr.host}/up/team/mirrored")
        push_classic_signature(ccr_client, "up/team/mirrored", digests["mirrored"], payload, signature)
        # copies in the CCR of a registry that is down by now: one carrying its signature, one not
        for name, attached in (("signed", True), ("unsigned", False)):
            copy_image(up, f"team/{name}", "1.0", ccr_client, f"down/team/{name}", tag="1.0", attached=attached)
        yield upstream, ccr, digests


@pytest.mark.parametrize(
    ("name", "failure", "words"),
    [
        ("signed", None, "simple signing"),
        ("bundled", None, "sigstore bundle"),
        ("tampered", Failure.WRONG_KEY, "or the signed payload was altered"),
        ("elsewhere", Failure.OTHER_DIGEST, "for another digest"),
        ("wrongkey", Failure.WRONG_KEY, "not signed by a configured key"),
        ("unsigned", Failure.NO_SIGNATURE, "no signature found"),
        ("bomb", Failure.WRONG_KEY, f"{BOMB_DISTINCT - MAX_SIGNATURES} more not examined"),
    ],
)
def test_signatures_in_a_real_registry(scene, name, failure, words):
    upstream, _, digests = scene
    started = time.monotonic()
    verdict = check_signatures(client(upstream), f"team/{name}", digests[name], KEYS, timeout=DEADLINE)
    assert time.monotonic() - started < DEADLINE
    assert verdict.failure is failure, verdict.reason
    assert words in verdict.reason


@pytest.mark.parametrize("name", ["signed", "bundled"])
def test_signatures_travel_with_the_image_and_verify_in_the_ccr(scene, name):
    upstream, ccr, digests = scene
    digest, target = digests[name], client(ccr)
    result = copy_image(client(upstream), f"team/{name}", "1.0", target, f"up/team/{name}", tag="1.0", attached=True)
    assert result.digest == digest and result.attached is not None
    assert result.attached.signature_tag is (name == "signed")
    assert len(result.attached.referrers) == (name == "bundled")
    verdict = check_signatures(target, f"up/team/{name}", digest, KEYS, timeout=DEADLINE)
    assert verdict.valid, verdict.reason
    if name == "signed":  # cosign finds it under the same tag, byte for byte
        upstream_sig = client(upstream).get_manifest(f"team/{name}", signature_tag(digest))
        assert target.get_manifest(f"up/team/{name}", signature_tag(digest)).data == upstream_sig.data
    else:  # distribution 2.8 has no referrers API: the referrers tag lists the copied bundle, as discovered
        index = json.loads(target.get_manifest(f"up/team/{name}", referrers_tag(digest)).data)
        assert [entry["digest"] for entry in index["manifests"]] == list(result.attached.referrers)
        assert index["manifests"][0]["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    again = copy_image(client(upstream), f"team/{name}", digest, target, f"up/team/{name}", attached=True)
    index_after = target.get_manifest(f"up/team/{name}", referrers_tag(digest)) if name == "bundled" else None
    assert again.attached == result.attached  # copying again changes nothing, lists nothing twice
    if index_after is not None:
        assert len(json.loads(index_after.data)["manifests"]) == 1


def test_a_referrers_bomb_is_cut_when_copying(scene):
    upstream, ccr, _ = scene
    result = copy_image(client(upstream), "team/bomb", "1.0", client(ccr), "up/team/bomb", attached=True)
    assert result.attached is not None  # 5000 entries, BOMB_DISTINCT manifests: at most MAX_REFERRERS copied
    assert len(result.attached.referrers) == min(BOMB_DISTINCT, MAX_REFERRERS)
    assert result.attached.referrers_left_out == max(0, BOMB_DISTINCT - MAX_REFERRERS)


@pytest.fixture(scope="module")
def hook(scene):
    upstream, ccr, _ = scene
    settings = {
        "ccr": {"registry": ccr.host, "insecure": True},
        "upstreams": [
            {"registry": upstream.host, "insecure": True, "prefix": "up"},
            {"registry": DOWN, "insecure": True, "prefix": "down"},
        ],
        "policy": {
            "copy": "none",
            "verify": [{"images": [f"{upstream.host}/team/*", f"{DOWN}/team/*"], "keys": [public_pem(KEY)]}],
        },
        "webhook": {"deadlineSeconds": DEADLINE},
    }
    with LocalWebhook(settings, workers=1) as server:
        yield server


def review_of(hook, image, dry_run=False):
    review = pod_review(pod_object("p", "team", [("app", image)]))
    path = "/dry-run" if dry_run else "/mutate"
    started = time.monotonic()
    response = send_review(hook.url + path, review, hook.client_ssl_context())
    return response, time.monotonic() - started


@pytest.mark.parametrize(
    ("name", "allowed", "words"),
    [
        ("signed", True, ""),
        ("bundled", True, ""),
        ("mirrored", True, ""),  # the CCR holds it: its copy's signature counts, upstream has none
        ("tampered", False, "or the signed payload was altered"),
        ("elsewhere", False, "for another digest"),
        ("wrongkey", False, "not signed by a configured key"),
        ("unsigned", False, "no signature found"),
        ("bomb", False, "more not examined"),
    ],
)
def test_admission_enforces_signatures(scene, hook, name, allowed, words):
    upstream, _, digests = scene
    response, took = review_of(hook, f"{upstream.host}/team/{name}:1.0")
    assert took < deadline_ceiling(DEADLINE)
    assert response["allowed"] is allowed, response
    if not allowed:
        message = response["status"]["message"]
        assert f"{upstream.host}/team/{name}@{digests[name]} has no valid signature" in message
        assert words in message
    warm, warm_took = review_of(hook, f"{upstream.host}/team/{name}:1.0")  # cached by digest: same verdict
    assert warm["allowed"] is allowed and warm_took < deadline_ceiling(DEADLINE)


@pytest.mark.parametrize(("name", "allowed"), [("signed", True), ("unsigned", False)])
def test_with_the_upstream_down_the_ccr_copy_of_the_tag_and_its_signature_decide(scene, hook, name, allowed):
    digests = scene[2]
    response, took = review_of(hook, f"{DOWN}/team/{name}:1.0")
    assert took < deadline_ceiling(DEADLINE)
    assert response["allowed"] is allowed, response
    if allowed:
        assert digests[name] in json.dumps(response.get("warnings"))  # pinned to what the CCR's copy holds
    else:
        assert f"{DOWN}/team/{name}@{digests[name]} has no valid signature" in response["status"]["message"]


def test_dry_run_warns_instead_of_denying(scene, hook):
    upstream, _, _ = scene
    response, _ = review_of(hook, f"{upstream.host}/team/unsigned:1.0", dry_run=True)
    assert response["allowed"]
    assert any("would be denied" in warning and "no signature found" in warning for warning in response["warnings"])


def test_the_verdict_is_cached_by_digest_positive_longer_than_negative(scene):
    """A warm admission asks no registry; a refusal is remembered briefly, so a signature pushed later counts soon."""
    upstream, ccr, _ = scene
    config = parse_config(
        {
            "ccr": {"registry": ccr.host, "insecure": True},
            "upstreams": [{"registry": upstream.host, "insecure": True, "prefix": "up"}],
            "policy": {"copy": "none", "verify": [{"images": ["*"], "keys": [public_pem(KEY)]}]},
            "resolver": {"cacheSeconds": 60, "negativeCacheSeconds": 5},
        }
    )
    clock, observed = Clock(), []
    registries = Registries(config)
    resolver = Resolver(config, registries, observe=lambda result, _registry: observed.append(result), clock=clock)
    signed, unsigned = (plan_image(f"{upstream.host}/team/{name}:1.0", config) for name in ("signed", "unsigned"))
    first = resolver.gather([signed, unsigned], DEADLINE)
    assert [fact.signature.valid for fact in first] == [True, False]
    clock.now += 6  # past negativeCacheSeconds: the refusal is asked again, the signature is not
    assert [fact.signature.valid for fact in resolver.gather([signed, unsigned], DEADLINE)] == [True, False]
    assert observed == ["miss", "miss", "hit", "miss"]
    clock.now += 60
    resolver.gather([signed], DEADLINE)
    assert observed[-1] == "miss"
    registries.close()
