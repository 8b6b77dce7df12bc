"""registry/signatures.py's bounds, against a registry of the test's own that answers whatever it is told to:
oversized payloads are not downloaded, a referrer entry that is no digest never names a URL, the lookup stops
at its deadline, and the classic tag is enough when it verifies."""

import json
import time

import pytest

from webhook.policy.signatures import (
    BUNDLE_MEDIA_TYPE,
    MAX_PAYLOAD_BYTES,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    public_keys,
    signature_tag,
)
from webhook.registry.client import OCI_INDEX, OCI_MANIFEST, Manifest, digest_of
from webhook.registry.errors import NotFound, RegistryProtocolError, RegistryUnavailable
from webhook.registry.signatures import check_signatures
from webhook.testing.cosign import classic_layer, new_key, public_pem

D1 = "sha256:" + "1" * 64
KEY = new_key()
KEYS = public_keys([public_pem(KEY)])


class Registry:
    """Manifests by reference and blobs by digest; records every request; `delay` slows each blob."""

    def __init__(self, manifests=None, blobs=None, referrers=None, delay=0.0):
        self.manifests, self.blobs, self.index = manifests or {}, blobs or {}, referrers
        self.asked: list[str] = []
        self.delay = delay

    def get_manifest(self, repository, reference, timeout=None):
        self.asked.append(f"manifest {reference}")
        if reference not in self.manifests:
            raise NotFound("manifest", reference)
        data = json.dumps(self.manifests[reference]).encode()
        return Manifest(self.manifests[reference].get("mediaType", OCI_MANIFEST), data, digest_of(data))

    def referrers(self, repository, digest, timeout=None):
        self.asked.append("referrers")
        if self.index is None:
            return None
        data = json.dumps(self.index).encode()
        return Manifest(OCI_INDEX, data, digest_of(data))

    def read_blob(self, repository, digest, limit, timeout=None):
        self.asked.append(f"blob {digest}")
        time.sleep(self.delay)
        return self.blobs[digest]


def sig_manifest(*layers):
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": list(layers)}


def classic_layer_of(payload, signature, size=None):
    return {
        "mediaType": SIMPLE_SIGNING,
        "digest": digest_of(payload),
        "size": len(payload) if size is None else size,
        "annotations": {SIGNATURE_ANNOTATION: signature},
    }


def test_a_valid_classic_signature_is_enough_the_referrers_are_not_asked():
    payload, signature = classic_layer(KEY, D1, "r/app")
    registry = Registry(
        {signature_tag(D1): sig_manifest(classic_layer_of(payload, signature))}, {digest_of(payload): payload}
    )
    assert check_signatures(registry, "app", D1, KEYS, timeout=5).valid
    assert "referrers" not in registry.asked


def test_a_payload_over_the_cap_is_never_downloaded():
    payload, signature = classic_layer(KEY, D1, "r/app")
    huge = classic_layer_of(payload, signature, size=MAX_PAYLOAD_BYTES + 1)
    registry = Registry({signature_tag(D1): sig_manifest(huge)}, {digest_of(payload): payload})
    verdict = check_signatures(registry, "app", D1, KEYS, timeout=5)
    assert not verdict.valid and "1 more not examined" in verdict.reason
    assert not any(asked.startswith("blob") for asked in registry.asked)


def test_a_referrer_that_is_no_digest_never_names_a_url():
    index = {
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "../../v2/_catalog", "size": 1, "artifactType": BUNDLE_MEDIA_TYPE}
        ]
    }
    registry = Registry(referrers=index)
    with pytest.raises(RegistryProtocolError, match="no valid digest"):
        check_signatures(registry, "app", D1, KEYS, timeout=5)
    assert registry.asked == [f"manifest {signature_tag(D1)}", "referrers"]


def test_the_lookup_stops_at_its_deadline():
    payloads = [classic_layer(new_key(), D1, f"r/app{n}") for n in range(3)]
    layers = [classic_layer_of(payload, signature) for payload, signature in payloads]
    registry = Registry({signature_tag(D1): sig_manifest(*layers)}, {digest_of(p): p for p, _ in payloads}, delay=0.2)
    with pytest.raises(RegistryUnavailable, match="deadline passed"):
        check_signatures(registry, "app", D1, KEYS, timeout=0.3)
    assert len([asked for asked in registry.asked if asked.startswith("blob")]) == 2
