"""Sign images the way cosign does, and push the signatures where cosign puts them: for the tests and benchmarks.

- `push_classic_signature`: `cosign sign --key` (classic): the simple-signing payload of the digest, signed
  (ECDSA with SHA-256 over the payload bytes for a P-256 key, Ed25519, or RSA PKCS#1 v1.5), pushed as a layer
  of the manifest tagged `sha256-<hex>.sig` with the base64 signature in its annotation; a further signature
  is appended as a further layer, as cosign does.
- `push_bundle_referrer`: `cosign sign --key --new-bundle-format`: a sigstore bundle v0.3 holding a DSSE envelope
  over an in-toto statement (predicate `https://sigstore.dev/cosign/sign/v1`, subject the digest), pushed as
  the one layer of an OCI 1.1 referrer manifest (`subject` the image, `artifactType` the bundle's media
  type) and listed in the `sha256-<hex>` index of the referrers tag schema for registries without the
  referrers API (distribution 2.8).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from webhook.policy.signatures import (
    BUNDLE_MEDIA_TYPE,
    IN_TOTO_PAYLOAD,
    SIGN_PREDICATE,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    dsse_pae,
    referrers_tag,
    signature_tag,
    simple_signing_payload,
)
from webhook.registry.client import OCI_INDEX, OCI_MANIFEST, RegistryClient, digest_of
from webhook.registry.errors import NotFound

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
EMPTY_CONFIG = b"{}"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"


def new_key(kind: str = "ecdsa") -> PrivateKey:
    """A fresh signing key: `ecdsa` (P-256, what `cosign generate-key-pair` makes), `ed25519` or `rsa`."""
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: PrivateKey) -> str:
    """The PEM public key, as `cosign public-key` prints it."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def sign(key: PrivateKey, message: bytes) -> bytes:
    """The signature of `message` as cosign makes it with `key`."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(message)


def classic_layer(key: PrivateKey, digest: str, reference: str, payload: bytes | None = None) -> tuple[bytes, str]:
    """A simple-signing payload for `reference@digest` (or `payload` as given) and its base64 signature."""
    payload = simple_signing_payload(digest, reference) if payload is None else payload
    return payload, base64.b64encode(sign(key, payload)).decode()


def sign_bundle(key: PrivateKey, digest: str, statement: dict[str, Any] | None = None) -> bytes:
    """A sigstore bundle v0.3 (key-based: only a public-key hint) with a DSSE envelope over the sign statement."""
    algorithm, _, hexdigest = digest.partition(":")
    statement = statement or {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {algorithm: hexdigest}}],
        "predicateType": SIGN_PREDICATE,
        "predicate": {},
    }
    payload = json.dumps(statement, separators=(",", ":")).encode()
    signature = sign(key, dsse_pae(IN_TOTO_PAYLOAD, payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": IN_TOTO_PAYLOAD,
            "signatures": [{"sig": base64.b64encode(signature).decode()}],
        },
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


def push_classic_signature(client: RegistryClient, repository: str, digest: str, payload: bytes, signature: str) -> str:
    """Add one signature layer to `sha256-<hex>.sig` in `repository` (made if missing); the manifest's digest."""
    tag = signature_tag(digest)
    try:
        manifest = json.loads(client.get_manifest(repository, tag).data)
    except NotFound:
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": _push(client, repository, EMPTY_CONFIG)}
        manifest["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json"
        manifest["layers"] = []
    layer = _push(client, repository, payload, SIMPLE_SIGNING)
    layer["annotations"] = {SIGNATURE_ANNOTATION: signature}
    manifest["layers"].append(layer)
    return client.put_manifest(repository, tag, _json(manifest), OCI_MANIFEST)


def push_bundle_referrer(
    client: RegistryClient, repository: str, subject: str, bundle: bytes, *, index_entries: int = 1
) -> str:
    """Push `bundle` as a referrer of manifest `subject` and list it in the referrers tag; the referrer's digest.

    `index_entries` > 1 lists the referrer that many times over: an index bomb of thousands of signature
    referrers (distribution checks that an index's manifests exist, so they are all this one).
    """
    head = client.get_manifest(repository, subject)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {**_push(client, repository, EMPTY_CONFIG), "mediaType": EMPTY_MEDIA_TYPE},
        "layers": [_push(client, repository, bundle, BUNDLE_MEDIA_TYPE)],
        "subject": {"mediaType": head.media_type, "digest": subject, "size": len(head.data)},
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"},
    }
    data = _json(manifest)
    referrer = client.put_manifest(repository, digest_of(data), data, OCI_MANIFEST)
    tag = referrers_tag(subject)
    try:
        index = json.loads(client.get_manifest(repository, tag).data)
    except NotFound:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    entry = {"mediaType": OCI_MANIFEST, "digest": referrer, "size": len(data), "artifactType": BUNDLE_MEDIA_TYPE}
    index["manifests"].append(entry)
    index["manifests"].extend([entry] * (index_entries - 1))
    client.put_manifest(repository, tag, _json(index), OCI_INDEX)
    return referrer


def sign_image(client: RegistryClient, repository: str, digest: str, key: PrivateKey, bundle: bool = False) -> None:
    """Sign `repository@digest` with `key` as `cosign sign --key` does: the classic `.sig` tag, or a bundle referrer."""
    if bundle:
        push_bundle_referrer(client, repository, digest, sign_bundle(key, digest))
        return
    payload, signature = classic_layer(key, digest, repository)
    push_classic_signature(client, repository, digest, payload, signature)


def _push(client: RegistryClient, repository: str, data: bytes, media_type: str = "") -> dict[str, Any]:
    digest = digest_of(data)
    if client.blob_size(repository, digest) is None:
        client.upload_blob(repository, digest, len(data), [data])
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
