"""Table tests of the pure signature check (`policy/signatures.py`), against cosign's own test vectors and against
signatures made here the way cosign makes them.

cosign's vectors (tests/data/cosign/README.md) are from sigstore/cosign at d6d86c224e5899b54f56cbb063b79dc43abc11c2:
`pkg/cosign/testdata/oci-attestation.sigstore.json`, the constants of
`cmd/cosign/cli/verify/verify_blob_attestation_test.go`, and the payload of `pkg/cosign/obsolete_test.go`.
"""

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook.policy.signatures import (
    BUNDLE_MEDIA_TYPE,
    MAX_PAYLOAD_BYTES,
    Evidence,
    Failure,
    InvalidPublicKey,
    Kind,
    key_id,
    parse_public_key,
    public_keys,
    simple_signing_payload,
    verify_digest,
)
from webhook.testing.cosign import classic_layer, new_key, public_pem, sign, sign_bundle

DATA = Path(__file__).parent / "data" / "cosign"
VECTORS = json.loads((DATA / "verify_blob_attestation.json").read_text())
BLOB = "sha256:" + VECTORS["blobSha256"]
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
KEY = new_key("ecdsa")
OTHER = new_key("ecdsa")


def keys(*private):
    return public_keys([public_pem(key) for key in private])


def classic(key, digest, **options):
    payload, signature = classic_layer(key, digest, "registry.example/app", **options)
    return Evidence(Kind.SIMPLE_SIGNING, payload, signature, "sha256-….sig layer 0")


def bundle(data):
    return Evidence(Kind.BUNDLE, data, None, "referrer sha256:…")


def envelope_bundle(name):
    """A cosign DSSE envelope of verify_blob_attestation_test.go, in the sigstore bundle a referrer carries."""
    envelope = json.loads(base64.b64decode(VECTORS["envelopes"][name]))
    return bundle(json.dumps({"mediaType": BUNDLE_MEDIA_TYPE, "dsseEnvelope": envelope}).encode())


# -- cosign's own vectors ----------------------------------------------------------------------------------------


def test_the_simple_signing_payload_is_byte_for_byte_cosigns():
    """pkg/cosign/obsolete_test.go: the property of generating exactly the same bytes is what signatures rely on."""
    expected = (
        b'{"critical":{"identity":{"docker-reference":"index.docker.io/namespace/image"},"image":'
        b'{"docker-manifest-digest":"sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    digest = "sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"
    assert simple_signing_payload(digest, "index.docker.io/namespace/image") == expected


COSIGN_KEY = public_keys([VECTORS["pubkey"]])


@pytest.mark.parametrize(
    ("envelope", "digest", "failure", "words"),
    [
        # signed by cosign's key over the blob, but a provenance attestation is not a signature
        ("blobSLSAProvenanceSignature", BLOB, Failure.MALFORMED, "an attestation (https://slsa.dev/provenance/v0.2)"),
        ("blobSLSAProvenanceSignature", D1, Failure.OTHER_DIGEST, f"for another digest ({BLOB}), not {D1}"),
        ("dssePredicateEmptySubject", BLOB, Failure.MALFORMED, "names no subject"),
        ("dssePredicateMissingSha256", BLOB, Failure.OTHER_DIGEST, "for another digest (no sha256 digest)"),
        ("dssePredicateMultipleSubjects", BLOB, Failure.MALFORMED, "not a signature"),
        ("dssePredicateMultipleSubjectsInvalid", BLOB, Failure.OTHER_DIGEST, "for another digest"),
    ],
)
def test_cosign_dsse_envelopes(envelope, digest, failure, words):
    verdict = verify_digest(digest, [envelope_bundle(envelope)], COSIGN_KEY)
    assert not verdict.valid
    assert verdict.failure is failure
    assert words in verdict.reason
    if failure is not Failure.MALFORMED or "attestation" in words:
        assert key_id(COSIGN_KEY[0]) in verdict.reason  # cosign's signature did verify with cosign's key


def test_cosign_envelopes_do_not_verify_with_another_key():
    verdict = verify_digest(BLOB, [envelope_bundle("blobSLSAProvenanceSignature")], keys(KEY))
    assert (verdict.valid, verdict.failure) == (False, Failure.WRONG_KEY)


def test_cosigns_oci_attestation_bundle():
    """The bundle cosign pushed as a referrer; its DSSE signature checks with the key of its certificate."""
    data = (DATA / "oci-attestation.sigstore.json").read_bytes()
    document = json.loads(data)
    certificate = x509.load_der_x509_certificate(
        base64.b64decode(document["verificationMaterial"]["certificate"]["rawBytes"])
    )
    pem = certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
    signed = verify_digest(digest, [bundle(data)], public_keys([pem.decode()]))
    assert signed.failure is Failure.MALFORMED and "https://cosign.sigstore.dev/attestation/v1" in signed.reason
    assert verify_digest(D1, [bundle(data)], public_keys([pem.decode()])).failure is Failure.OTHER_DIGEST
    assert verify_digest(digest, [bundle(data)], keys(KEY)).failure is Failure.WRONG_KEY
    tampered = data.replace(b'"payload":"ey', b'"payload":"ez')
    assert verify_digest(digest, [bundle(tampered)], public_keys([pem.decode()])).failure is not None


# -- signatures made here as cosign makes them -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519", "rsa"])
def test_a_classic_signature_by_each_kind_of_key(kind):
    key = new_key(kind)
    verdict = verify_digest(D1, [classic(key, D1)], keys(OTHER, key))
    assert verdict.valid, verdict.reason
    assert key_id(public_keys([public_pem(key)])[0]) in verdict.reason


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519", "rsa"])
def test_a_bundle_signature_by_each_kind_of_key(kind):
    key = new_key(kind)
    verdict = verify_digest(D1, [bundle(sign_bundle(key, D1))], keys(key))
    assert verdict.valid, verdict.reason


def _tampered(evidence):
    return Evidence(evidence.kind, evidence.data.replace(b"registry.example", b"registry.evil"), evidence.signature)


def _message_signature(key, digest):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import utils

    value = bytes.fromhex(digest.partition(":")[2])
    signature = key.sign(value, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    message = {
        "messageDigest": {"algorithm": "SHA2_256", "digest": base64.b64encode(value).decode()},
        "signature": base64.b64encode(signature).decode(),
    }
    return bundle(json.dumps({"mediaType": BUNDLE_MEDIA_TYPE, "messageSignature": message}).encode())


def _classic_with(payload: bytes, key=KEY):
    return Evidence(Kind.SIMPLE_SIGNING, payload, base64.b64encode(sign(key, payload)).decode())


@pytest.mark.parametrize(
    ("evidence", "failure", "words"),
    [
        ([], Failure.NO_SIGNATURE, f"no signature found for {D1}"),
        ([classic(KEY, D1)], None, "simple signing"),
        ([_tampered(classic(KEY, D1))], Failure.WRONG_KEY, "or the signed payload was altered"),
        ([classic(KEY, D2)], Failure.OTHER_DIGEST, f"for another digest ({D2}), not {D1}"),
        ([classic(OTHER, D1)], Failure.WRONG_KEY, "not signed by a configured key"),
        ([classic(OTHER, D1), classic(KEY, D1)], None, "simple signing"),
        ([classic(OTHER, D1), classic(KEY, D2)], Failure.OTHER_DIGEST, "2 signatures examined, none valid"),
        ([Evidence(Kind.SIMPLE_SIGNING, b"{}", None)], Failure.MALFORMED, "no dev.cosignproject.cosign/signature"),
        ([Evidence(Kind.SIMPLE_SIGNING, b"{}", "%%%")], Failure.MALFORMED, "not base64"),
        ([_classic_with(b"not json")], Failure.MALFORMED, "the payload is not JSON"),
        ([_classic_with(b'{"critical":{"type":"x"}}')], Failure.MALFORMED, "critical.type is 'x'"),
        ([_classic_with(b"x" * (MAX_PAYLOAD_BYTES + 1))], Failure.MALFORMED, "larger than"),
        ([bundle(sign_bundle(KEY, D1))], None, "sigstore bundle"),
        ([bundle(sign_bundle(KEY, D2))], Failure.OTHER_DIGEST, f"({D2}), not {D1}"),
        ([bundle(sign_bundle(OTHER, D1))], Failure.WRONG_KEY, "not signed by a configured key"),
        ([bundle(b'{"mediaType":"application/json"}')], Failure.MALFORMED, "not a sigstore bundle"),
        ([bundle(b"[]")], Failure.MALFORMED, "the bundle is not a JSON object"),
        ([bundle(json.dumps({"mediaType": BUNDLE_MEDIA_TYPE}).encode())], Failure.MALFORMED, "neither"),
        ([_message_signature(KEY, D1)], None, "message signature"),
        ([_message_signature(KEY, D2)], Failure.OTHER_DIGEST, f"({D2}), not {D1}"),
        ([_message_signature(OTHER, D1)], Failure.WRONG_KEY, "not signed"),
    ],
)
def test_verdicts(evidence, failure, words):
    verdict = verify_digest(D1, evidence, keys(KEY))
    assert verdict.valid is (failure is None)
    assert verdict.failure is failure
    assert words in verdict.reason


def test_signatures_left_unread_are_named():
    verdict = verify_digest(D1, [classic(OTHER, D1)], keys(KEY), skipped=4000)
    assert "4000 more not examined" in verdict.reason


@pytest.mark.parametrize(
    ("pem", "words"),
    [
        ("not a key", "not a PEM public key"),
        (public_pem(ec.generate_private_key(ec.SECP224R1())), "secp224r1 is not one cosign signs with"),
    ],
)
def test_unusable_keys_are_refused(pem, words):
    with pytest.raises(InvalidPublicKey, match=words):
        parse_public_key(pem)
