"""Cosign signatures over an image digest, checked against configured public keys: pure, no I/O.

Two formats, as cosign writes them (key-based only; keyless Fulcio/Rekor needs a trust root and is not
checked here):
- the classic `sha256-<hex>.sig` tag: each layer a simple-signing payload
  (`{"critical": {"image": {"docker-manifest-digest": …}, "type": "cosign container image signature"}, …}`)
  with its base64 signature over the payload bytes in the layer's `dev.cosignproject.cosign/signature`
  annotation;
- a sigstore bundle v0.3 (an OCI 1.1 referrer, `cosign sign --new-bundle-format`): a DSSE envelope over an
  in-toto statement of predicate `https://sigstore.dev/cosign/sign/v1` whose subject is the digest, or a
  messageSignature over the digest itself.

The registry side (`registry/signatures.py`) fetches the `Evidence`; `verify_digest` says whether one piece is a
valid signature by one of the keys over exactly that digest, and if none is, why, in words a person can act on.
The payload's `docker-reference` is not compared: a mirror (the CCR) holds the image under another name.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from webhook.config.checks import SIGNING_CURVES, unsupported_key
from webhook.errors import CCRWebhookError

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
SIMPLE_SIGNING_TYPE = "cosign container image signature"
IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"
MAX_PAYLOAD_BYTES = 256 * 1024  # a payload or bundle larger than this is refused unread
MAX_SIGNATURES = 16  # signatures examined per digest (`.sig` layers and bundle referrers); the rest are not

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
_ATTACHMENT_TAG = re.compile(r"(sha256)-([0-9a-f]{64})(\.sig|\.att|\.sbom)?")


class InvalidPublicKey(CCRWebhookError):
    """A configured verification key is not a PEM public key of a kind cosign signs with."""


class Failure(enum.IntEnum):
    """Why a piece of evidence does not verify; a higher value is the more telling reason to report."""

    NO_SIGNATURE = 0
    MALFORMED = 1
    WRONG_KEY = 2
    OTHER_DIGEST = 3


class Kind(str, enum.Enum):
    """The format a piece of evidence came in."""

    SIMPLE_SIGNING = "simple-signing"  # a layer of the `.sig` manifest: payload bytes plus annotation
    BUNDLE = "bundle"  # a sigstore bundle (JSON) from a referrer


class Attached(str, enum.Enum):
    """What a tag attached to a digest holds, by the tag's suffix (the value): cosign's, or the referrers index."""

    SIGNATURE = ".sig"  # cosign's classic signatures
    ATTESTATION = ".att"  # cosign's attestations
    SBOM = ".sbom"  # cosign's attached SBOM
    REFERRERS = ""  # the OCI referrers tag schema's index of the digest's referrers

    @property
    def noun(self) -> str:
        """What people call one, in messages."""
        return {".sig": "signature", ".att": "attestation", ".sbom": "SBOM", "": "referrers index"}[self.value]


@dataclass(frozen=True, slots=True)
class AttachmentTag:
    """A tag that names an attachment of `subject` (a manifest digest) rather than an image of its own."""

    subject: str
    kind: Attached


def attachment_tag(digest: str, kind: Attached) -> str:
    """The tag an attachment of `digest` goes by: `sha256-<hex>` then the kind's suffix (`.sig`, `.att`, `.sbom`)."""
    return digest.replace(":", "-", 1) + kind.value


def signature_tag(digest: str) -> str:
    """The tag cosign gives an image's classic signatures: `sha256-<hex>.sig`."""
    return attachment_tag(digest, Attached.SIGNATURE)


def referrers_tag(digest: str) -> str:
    """The tag of the OCI referrers tag schema (and cosign's prefix): `sha256-<hex>`."""
    return attachment_tag(digest, Attached.REFERRERS)


def attachment_of(tag: str) -> AttachmentTag | None:
    """Which digest `tag` is an attachment of, and what kind, as `attachment_tag` names them; None for any other tag."""
    match = _ATTACHMENT_TAG.fullmatch(tag)
    if match is None:
        return None
    algorithm, hexdigest, suffix = match.groups()
    return AttachmentTag(f"{algorithm}:{hexdigest}", Attached(suffix or ""))


@dataclass(frozen=True, slots=True)
class Evidence:
    """One signature as the registry holds it: the layer's bytes, and the annotation's signature for simple signing."""

    kind: Kind
    data: bytes
    signature: str | None = None
    where: str = ""  # what messages call it: `sha256-<hex>.sig layer 0`, `referrer sha256:…`


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a digest carries a valid signature by a configured key, and in words why (not)."""

    valid: bool
    reason: str
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    failure: Failure | None
    why: str


def public_keys(pems: Sequence[str]) -> tuple[PublicKey, ...]:
    """The public keys of PEM texts (configuration's `policy.verify[].keys`), parsed once per distinct set."""
    return _parsed(tuple(pems))


@functools.lru_cache(maxsize=64)
def _parsed(pems: tuple[str, ...]) -> tuple[PublicKey, ...]:
    return tuple(parse_public_key(pem) for pem in pems)


def parse_public_key(pem: str) -> PublicKey:
    """One PEM public key (ECDSA P-256/384/521, Ed25519, RSA); InvalidPublicKey for anything else."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm) as err:
        raise InvalidPublicKey(f"not a PEM public key ({str(err).splitlines()[0][:120]})") from None
    unsupported = unsupported_key(key)
    if unsupported or not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey)):
        raise InvalidPublicKey(unsupported or "not a signing key")
    return key


def key_id(key: PublicKey) -> str:
    """A short name for a key in messages: the first 12 hex digits of the sha256 of its DER form."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()[:12]


def verify_digest(digest: str, evidence: Sequence[Evidence], keys: Sequence[PublicKey], skipped: int = 0) -> Verdict:
    """Whether one piece of `evidence` is a valid signature by one of `keys` over exactly `digest`.

    `skipped` counts signatures the registry listed beyond what was examined (MAX_SIGNATURES), for the reason.
    """
    outcomes: list[_Outcome] = []
    for piece in evidence:
        outcome = _check(piece, digest, keys)
        if outcome.failure is None:
            return Verdict(True, f"signed ({outcome.why})")
        outcomes.append(outcome)
    more = f"; {skipped} more not examined (at most {MAX_SIGNATURES} are)" if skipped else ""
    if not outcomes:
        return Verdict(False, f"no signature found for {digest}{more}", Failure.NO_SIGNATURE)
    worst = max(outcomes, key=lambda outcome: outcome.failure or 0)
    count = f"{len(outcomes)} signatures examined, none valid; " if len(outcomes) > 1 else ""
    return Verdict(False, f"{count}{worst.why}{more}", worst.failure)


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: the bytes a DSSE signature is made over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def simple_signing_payload(digest: str, reference: str) -> bytes:
    """The payload cosign signs for `reference@digest` (classic format), byte for byte as cosign marshals it."""
    critical = {
        "identity": {"docker-reference": reference},
        "image": {"docker-manifest-digest": digest},
        "type": SIMPLE_SIGNING_TYPE,
    }
    return json.dumps({"critical": critical, "optional": None}, separators=(",", ":")).encode()


# -- one piece of evidence ---------------------------------------------------------------------------------


def _check(piece: Evidence, digest: str, keys: Sequence[PublicKey]) -> _Outcome:
    where = f"{piece.where}: " if piece.where else ""
    if len(piece.data) > MAX_PAYLOAD_BYTES:
        return _Outcome(Failure.MALFORMED, f"{where}larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        if piece.kind is Kind.SIMPLE_SIGNING:
            outcome = _simple_signing(piece, digest, keys)
        else:
            outcome = _bundle(piece.data, digest, keys)
    except _Malformed as err:
        outcome = _Outcome(Failure.MALFORMED, f"malformed: {err}")
    return _Outcome(outcome.failure, where + outcome.why)


class _Malformed(CCRWebhookError):
    """A signature that cannot even be read; the message says what is wrong with it."""


def _simple_signing(piece: Evidence, digest: str, keys: Sequence[PublicKey]) -> _Outcome:
    if piece.signature is None:
        raise _Malformed(f"no {SIGNATURE_ANNOTATION} annotation")
    signature = _base64(piece.signature, "the signature annotation")
    signer = _signer(keys, signature, piece.data)
    if signer is None:
        return _Outcome(Failure.WRONG_KEY, _wrong_key(keys))
    payload = _json_object(piece.data, "the payload")
    critical = _object(payload.get("critical"), "critical")
    kind = critical.get("type")
    if kind != SIMPLE_SIGNING_TYPE:
        raise _Malformed(f"critical.type is {str(kind)[:80]!r}, not {SIMPLE_SIGNING_TYPE!r}")
    named = _object(critical.get("image"), "critical.image").get("docker-manifest-digest")
    if named != digest:
        return _Outcome(Failure.OTHER_DIGEST, _other_digest(signer, str(named)[:80], digest))
    return _Outcome(None, f"simple signing, key {signer}")


def _bundle(data: bytes, digest: str, keys: Sequence[PublicKey]) -> _Outcome:
    bundle = _json_object(data, "the bundle")
    media_type = bundle.get("mediaType")
    if not isinstance(media_type, str) or not media_type.startswith("application/vnd.dev.sigstore.bundle"):
        raise _Malformed(f"not a sigstore bundle (mediaType {str(media_type)[:80]!r})")
    if "dsseEnvelope" in bundle:
        return _dsse(_object(bundle["dsseEnvelope"], "dsseEnvelope"), digest, keys)
    if "messageSignature" in bundle:
        return _message_signature(_object(bundle["messageSignature"], "messageSignature"), digest, keys)
    raise _Malformed("the bundle holds neither a dsseEnvelope nor a messageSignature")


def _dsse(envelope: dict[str, Any], digest: str, keys: Sequence[PublicKey]) -> _Outcome:
    payload_type = envelope.get("payloadType")
    if payload_type != IN_TOTO_PAYLOAD:
        raise _Malformed(f"DSSE payloadType is {str(payload_type)[:80]!r}, not {IN_TOTO_PAYLOAD!r}")
    payload = _base64(envelope.get("payload"), "the DSSE payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise _Malformed("the DSSE envelope has no signatures")
    signed = dsse_pae(payload_type, payload)
    signer = None
    for entry in signatures[:MAX_SIGNATURES]:
        signer = _signer(keys, _base64(_object(entry, "a DSSE signature").get("sig"), "a DSSE signature"), signed)
        if signer is not None:
            break
    if signer is None:
        return _Outcome(Failure.WRONG_KEY, _wrong_key(keys))
    statement = _json_object(payload, "the in-toto statement")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise _Malformed("the in-toto statement names no subject")
    algorithm, _, hexdigest = digest.partition(":")
    named = [_object(subject, "a subject").get("digest") for subject in subjects]
    if not any(isinstance(entry, dict) and entry.get(algorithm) == hexdigest for entry in named):
        found = (f"{algorithm}:{entry[algorithm]}" for entry in named if isinstance(entry, dict) and algorithm in entry)
        first = next(found, f"no {algorithm} digest")
        return _Outcome(Failure.OTHER_DIGEST, _other_digest(signer, first[:80], digest))
    predicate = statement.get("predicateType")
    if predicate != SIGN_PREDICATE:  # an SBOM or provenance attestation by the key says something else
        return _Outcome(Failure.MALFORMED, f"an attestation ({str(predicate)[:80]}) by key {signer}, not a signature")
    return _Outcome(None, f"sigstore bundle, key {signer}")


def _message_signature(message: dict[str, Any], digest: str, keys: Sequence[PublicKey]) -> _Outcome:
    algorithm, _, hexdigest = digest.partition(":")
    named = _object(message.get("messageDigest"), "messageDigest")
    if named.get("algorithm") != "SHA2_256" or algorithm != "sha256":
        raise _Malformed(f"messageDigest algorithm {str(named.get('algorithm'))[:40]!r} is not SHA2_256")
    value = _base64(named.get("digest"), "messageDigest.digest")
    signature = _base64(message.get("signature"), "messageSignature.signature")
    signer = _signer(keys, signature, value, prehashed=True)
    if signer is None:
        return _Outcome(Failure.WRONG_KEY, _wrong_key(keys))
    if value.hex() != hexdigest:
        return _Outcome(Failure.OTHER_DIGEST, _other_digest(signer, f"sha256:{value.hex()}", digest))
    return _Outcome(None, f"sigstore bundle message signature, key {signer}")


# -- signatures and keys -------------------------------------------------------------------------------------


def _signer(keys: Sequence[PublicKey], signature: bytes, message: bytes, prehashed: bool = False) -> str | None:
    """The id of the first key whose signature over `message` (its sha256 when `prehashed`) `signature` is."""
    for key in keys:
        if _verifies(key, signature, message, prehashed):
            return key_id(key)
    return None


def _verifies(key: PublicKey, signature: bytes, message: bytes, prehashed: bool) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = SIGNING_CURVES[key.curve.name]()
            chosen = utils.Prehashed(algorithm) if prehashed else algorithm
            if prehashed and len(message) != algorithm.digest_size:
                return False
            key.verify(signature, message, ec.ECDSA(chosen))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(
                signature,
                message,
                padding.PKCS1v15(),
                utils.Prehashed(hashes.SHA256()) if prehashed else hashes.SHA256(),
            )
        elif prehashed:  # Ed25519 signs whole messages: a digest alone cannot be checked
            return False
        else:
            key.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _wrong_key(keys: Sequence[PublicKey]) -> str:
    names = ", ".join(key_id(key) for key in keys)
    return f"not signed by a configured key ({names}), or the signed payload was altered"


def _other_digest(signer: str, named: str, digest: str) -> str:
    return f"signed by key {signer} for another digest ({named}), not {digest}"


# -- reading --------------------------------------------------------------------------------------------------


def _base64(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Malformed(f"{what} is not base64") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _Malformed(f"{what} is not JSON") from None
    return _object(document, what)


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"{what} is not a JSON object")
    return value
