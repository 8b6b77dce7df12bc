"""Deciding what to serve (pure): the CA, the bundle of CAs clients trust, and the serving pair, renewed when due."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhook.tls.certs import (
    CertificateError,
    CertificateInfo,
    KeyPair,
    describe_certificate,
    generate_ca,
    issue_serving_cert,
    key_matches_certificate,
    load_certificates,
    utc_now,
    verify_serving_certificate,
)


@dataclass(frozen=True)
class TLSMaterial:
    """The CA that signs (cert + key), the CA bundle clients trust (signing CA first), the serving pair."""

    ca: KeyPair
    ca_bundle: bytes
    serving: KeyPair


@dataclass(frozen=True)
class RenewalPolicy:
    """Lifetimes and when to renew.

    A serving certificate is reissued when less than `renew_fraction` of its life is left (a third, as
    cert-manager does), so a renewal that fails has weeks of retries before anything expires. The CA is
    replaced when less than two serving lifetimes are left; the old CA stays in the bundle until it
    expires, so certificates it signed keep verifying while the new ones roll out.
    """

    serving_days: int = 90
    ca_days: int = 3650
    renew_fraction: float = 1 / 3

    def serving_due(self, info: CertificateInfo, now: datetime.datetime) -> bool:
        return info.remaining_fraction(now) < self.renew_fraction

    def ca_due(self, info: CertificateInfo, now: datetime.datetime) -> bool:
        return info.not_after - now < datetime.timedelta(days=2 * self.serving_days)


def plan_tls_material(
    current: TLSMaterial | None,
    dns_names: list[str],
    ip_addresses: list[str],
    policy: RenewalPolicy,
    now: datetime.datetime | None = None,
) -> tuple[TLSMaterial, str | None]:
    """The material to use from now on, and why it changed (None: `current` is fine, keep it as it is)."""
    now = now or utc_now()
    if current is None:
        return _fresh_material(None, dns_names, ip_addresses, policy, now), "no certificate yet"
    if not key_matches_certificate(current.ca.cert_pem, current.ca.key_pem):
        return _fresh_material(
            None, dns_names, ip_addresses, policy, now
        ), "the CA key does not match the CA certificate"
    ca_info = describe_certificate(current.ca.cert_pem)
    if policy.ca_due(ca_info, now):
        return _fresh_material(
            current, dns_names, ip_addresses, policy, now
        ), f"the CA expires {ca_info.not_after:%Y-%m-%d}"
    reason = _serving_problem(current, dns_names, ip_addresses, policy, now)
    bundle = _bundle([load_certificates(current.ca.cert_pem)[0], *load_certificates(current.ca_bundle)], now)
    if reason is None and bundle == current.ca_bundle:
        return current, None
    serving = (
        current.serving
        if reason is None
        else issue_serving_cert(current.ca, dns_names, ip_addresses, policy.serving_days, now=now)
    )
    return TLSMaterial(current.ca, bundle, serving), reason or "expired CAs dropped from the bundle"


def _serving_problem(
    current: TLSMaterial, dns_names: list[str], ip_addresses: list[str], policy: RenewalPolicy, now: datetime.datetime
) -> str | None:
    """Why the serving pair must be reissued, or None if it may stay."""
    try:
        info = describe_certificate(current.serving.cert_pem)
        if info.not_after <= now:
            return f"the serving certificate expired {info.not_after:%Y-%m-%d}"
        verify_serving_certificate(current.ca.cert_pem, current.serving.cert_pem, (dns_names or ip_addresses)[0], now)
    except CertificateError as err:
        return f"the serving certificate does not verify against the CA: {err}"
    if not key_matches_certificate(current.serving.cert_pem, current.serving.key_pem):
        return "the serving key does not match the serving certificate"
    if set(info.dns_names) != set(dns_names) or set(info.ip_addresses) != {
        str(ipaddress.ip_address(a)) for a in ip_addresses
    }:
        return "the serving certificate names other hosts than the Service"
    if policy.serving_due(info, now):
        return f"the serving certificate expires {info.not_after:%Y-%m-%d}"
    return None


def _fresh_material(
    previous: TLSMaterial | None,
    dns_names: list[str],
    ip_addresses: list[str],
    policy: RenewalPolicy,
    now: datetime.datetime,
) -> TLSMaterial:
    """A new CA and serving pair; the CAs of `previous` stay in the bundle while they are valid."""
    ca = generate_ca(days=policy.ca_days, now=now)
    serving = issue_serving_cert(ca, dns_names, ip_addresses, policy.serving_days, now=now)
    older = load_certificates(previous.ca_bundle) if previous else []
    return TLSMaterial(ca, _bundle([load_certificates(ca.cert_pem)[0], *older], now), serving)


def _bundle(cas: list[x509.Certificate], now: datetime.datetime) -> bytes:
    """PEM of the CAs still valid at `now`, first occurrence first, no duplicates."""
    seen: set[bytes] = set()
    pem = b""
    for cert in cas:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der in seen or cert.not_valid_after_utc <= now:
            continue
        seen.add(der)
        pem += cert.public_bytes(serialization.Encoding.PEM)
    return pem
