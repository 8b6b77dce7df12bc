"""Certificates: chains verify for every service name, renewal is planned right, serving files are replaced whole."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.certificates import HOST, NAMES, POLICY, serial
from webhook import tls

DAY = datetime.timedelta(days=1)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_service_names_cover_every_form_the_api_server_may_use():
    assert tls.service_dns_names("ccr-webhook", "ccr-system") == [
        "ccr-webhook",
        "ccr-webhook.ccr-system",
        "ccr-webhook.ccr-system.svc",
        "ccr-webhook.ccr-system.svc.cluster.local",
    ]


def test_generated_chain_verifies_for_every_san_and_nothing_else():
    ca = tls.generate_ca()
    pair = tls.issue_serving_cert(ca, NAMES, ["127.0.0.1", "::1"])
    for host in [*NAMES, "127.0.0.1", "::1"]:
        tls.verify_serving_certificate(ca.cert_pem, pair.cert_pem, host)
    info = tls.describe_certificate(pair.cert_pem)
    assert info.dns_names == tuple(NAMES) and info.ip_addresses == ("127.0.0.1", "::1") and not info.is_ca
    assert tls.describe_certificate(ca.cert_pem).is_ca
    with pytest.raises(tls.CertificateError, match="subjectAltName"):
        tls.verify_serving_certificate(ca.cert_pem, pair.cert_pem, "evil.example.com")
    with pytest.raises(tls.CertificateError):
        tls.verify_serving_certificate(tls.generate_ca().cert_pem, pair.cert_pem, HOST)
    with pytest.raises(tls.CertificateError):
        tls.verify_serving_certificate(ca.cert_pem, pair.cert_pem, HOST, now() + 400 * DAY)
    assert tls.key_matches_certificate(pair.cert_pem, pair.key_pem)
    assert not tls.key_matches_certificate(pair.cert_pem, ca.key_pem)


def test_serving_certificate_never_outlives_its_ca():
    ca = tls.generate_ca(days=10)
    pair = tls.issue_serving_cert(ca, NAMES, days=365)
    assert tls.describe_certificate(pair.cert_pem).not_after <= tls.describe_certificate(ca.cert_pem).not_after


def test_a_bundle_of_two_cas_verifies_certificates_of_either():
    old, new = tls.generate_ca(), tls.generate_ca()
    bundle = new.cert_pem + old.cert_pem
    for ca in (old, new):
        tls.verify_serving_certificate(bundle, tls.issue_serving_cert(ca, NAMES).cert_pem, HOST)


def test_plan_makes_material_from_nothing_and_then_keeps_it():
    material, reason = tls.plan_tls_material(None, NAMES, [], POLICY)
    assert reason == "no certificate yet"
    tls.verify_serving_certificate(material.ca_bundle, material.serving.cert_pem, HOST)
    assert tls.plan_tls_material(material, NAMES, [], POLICY) == (material, None)


def test_plan_renews_the_serving_certificate_with_a_third_of_its_life_left():
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY, now=now() - 59 * DAY)
    assert tls.plan_tls_material(material, NAMES, [], POLICY)[1] is None  # 31 of 90 days left
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY, now=now() - 61 * DAY)
    renewed, reason = tls.plan_tls_material(material, NAMES, [], POLICY)
    assert reason.startswith("the serving certificate expires")
    assert renewed.ca == material.ca and renewed.ca_bundle == material.ca_bundle  # same CA: the caBundle stays
    assert serial(renewed.serving.cert_pem) != serial(material.serving.cert_pem)
    tls.verify_serving_certificate(material.ca_bundle, renewed.serving.cert_pem, HOST, now() + 80 * DAY)


def test_plan_reissues_when_the_service_names_change_or_the_pair_is_broken():
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    other = tls.service_dns_names("ccr-webhook", "other-namespace")
    renamed, reason = tls.plan_tls_material(material, other, [], POLICY)
    assert reason == "the serving certificate names other hosts than the Service"
    assert tls.describe_certificate(renamed.serving.cert_pem).dns_names == tuple(other)
    broken = tls.TLSMaterial(
        material.ca, material.ca_bundle, tls.KeyPair(material.serving.cert_pem, material.ca.key_pem)
    )
    assert (
        tls.plan_tls_material(broken, NAMES, [], POLICY)[1] == "the serving key does not match the serving certificate"
    )
    foreign = tls.TLSMaterial(material.ca, material.ca_bundle, tls.issue_serving_cert(tls.generate_ca(), NAMES))
    assert "does not verify against the CA" in tls.plan_tls_material(foreign, NAMES, [], POLICY)[1]


def test_plan_rotates_a_ca_near_its_end_keeping_the_old_one_trusted_until_it_expires():
    old_ca = tls.generate_ca(days=365, now=now() - 200 * DAY)  # 165 days left: less than two serving lifetimes
    material = tls.TLSMaterial(old_ca, old_ca.cert_pem, tls.issue_serving_cert(old_ca, NAMES, days=90))
    rotated, reason = tls.plan_tls_material(material, NAMES, [], POLICY)
    assert reason.startswith("the CA expires")
    trusted = tls.load_certificates(rotated.ca_bundle)
    assert [serial(c.public_bytes(serialization.Encoding.PEM)) for c in trusted] == [
        serial(rotated.ca.cert_pem),
        serial(material.ca.cert_pem),
    ]
    tls.verify_serving_certificate(rotated.ca_bundle, material.serving.cert_pem, HOST)  # old pair still trusted
    tls.verify_serving_certificate(rotated.ca_bundle, rotated.serving.cert_pem, HOST)
    # once the old CA has expired it leaves the bundle
    later, reason = tls.plan_tls_material(rotated, NAMES, [], POLICY, now=now() + 170 * DAY)
    assert later.ca_bundle == rotated.ca.cert_pem and reason.startswith("the serving certificate expired")
    pruned, reason = tls.plan_tls_material(
        tls.TLSMaterial(rotated.ca, rotated.ca_bundle, later.serving), NAMES, [], POLICY, now=now() + 170 * DAY
    )
    assert reason == "expired CAs dropped from the bundle" and pruned.ca_bundle == rotated.ca.cert_pem


def test_serving_files_are_replaced_whole_and_only_when_they_change(tmp_path):
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    assert tls.write_serving_files(tmp_path, material)
    assert not tls.write_serving_files(tmp_path, material)
    assert (tmp_path / "tls.crt").read_bytes() == material.serving.cert_pem
    assert (tmp_path / "tls.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
