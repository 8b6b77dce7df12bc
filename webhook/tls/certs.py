"""Certificates as data: make a CA and the serving certificates it signs, and look at and verify what is given.

The API server refuses a serving certificate that names its host only in the Common Name, so every
name and address goes into the subjectAlternativeName extension.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from webhook.errors import CCRWebhookError


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Write both files; the key is created readable by its owner only."""
        Path(cert_path).write_bytes(self.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.key_pem)
        os.chmod(key_path, 0o600)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def generate_ca(
    common_name: str = "ccr-webhook CA", days: int = 3650, *, now: datetime.datetime | None = None
) -> KeyPair:
    """A self-signed CA that may sign serving certificates only (path length 0); `now` backdates it for tests."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = now or utc_now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_serving_cert(
    ca: KeyPair,
    dns_names: list[str],
    ip_addresses: list[str] | None = None,
    days: int = 365,
    *,
    now: datetime.datetime | None = None,
) -> KeyPair:
    """A serving certificate signed by `ca`, valid for every DNS name and IP address given (as SANs).

    It never outlives its CA: a chain whose leaf is still valid but whose CA has expired fails to verify.
    """
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    ip_addresses = ip_addresses or []
    sans += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    now = now or utc_now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (list(dns_names) or list(ip_addresses))[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


# ---------------------------------------------------------------------------------------------------
# Looking at certificates


class CertificateError(CCRWebhookError):
    """A certificate, key or chain is unusable; the message says which and why."""


def service_dns_names(service: str, namespace: str, cluster_domain: str = "cluster.local") -> list[str]:
    """Every name under which a Service is reached in the cluster; the API server uses `<svc>.<ns>.svc`."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
    ]


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order; CertificateError if there is none or one is broken."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise CertificateError(f"not a PEM certificate bundle: {err}") from None
    return certs


@dataclass(frozen=True)
class CertificateInfo:
    """What an operator wants to know about a certificate."""

    subject: str
    issuer: str
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool

    def remaining_fraction(self, now: datetime.datetime) -> float:
        """How much of the validity period is left at `now`: 1.0 when issued, 0.0 at expiry (clamped)."""
        lifetime = (self.not_after - self.not_before).total_seconds()
        left = (self.not_after - now).total_seconds()
        return max(0.0, min(1.0, left / lifetime)) if lifetime > 0 else 0.0


def describe_certificate(cert_pem: bytes) -> CertificateInfo:
    """The first certificate of `cert_pem`, described."""
    cert = load_certificates(cert_pem)[0]
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(sans.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(address) for address in sans.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ip_addresses = (), ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        is_ca=is_ca,
    )


def key_matches_certificate(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether `key_pem` is the private key of the first certificate in `cert_pem`."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert = load_certificates(cert_pem)[0]
    except (ValueError, TypeError, CertificateError):
        return False
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == (cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def verify_serving_certificate(
    ca_bundle_pem: bytes, cert_pem: bytes, host: str, now: datetime.datetime | None = None
) -> None:
    """Check, as a TLS client would, that `cert_pem` chains to a CA of the bundle and is valid for `host`.

    `host` is a DNS name or an IP address. Raises CertificateError saying what is wrong.
    """
    try:
        address = ipaddress.ip_address(host)
        subject: x509.DNSName | x509.IPAddress = x509.IPAddress(address)
    except ValueError:
        subject = x509.DNSName(host)
    chain = load_certificates(cert_pem)
    builder = PolicyBuilder().store(Store(load_certificates(ca_bundle_pem))).time(now or utc_now())
    try:
        builder.build_server_verifier(subject).verify(chain[0], chain[1:])
    except Exception as err:  # cryptography's VerificationError is not importable under one stable name
        raise CertificateError(f"certificate is not valid for {host}: {err}") from None
