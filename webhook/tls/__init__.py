"""Certificates for the webhook's TLS: a CA, serving certificates it signs, their renewal, and a server
context that picks up a renewed certificate without a restart.

certs (make, look at, verify), renewal (the pure plan of what to serve), files (the serving pair on disk),
reload (the SSL contexts), expiry (their notAfter as a metric, imported on its own: it loads
prometheus_client, which `serve` must configure first), bootstrap (the Secret and the webhook
configurations' caBundle). In the cluster, `bootstrap_certificates` keeps one Secret valid and publishes
its CA; `reloading_ssl_context` serves whatever pair is on disk at the moment of each TLS handshake. The
names below are the package's API.
"""

from webhook.tls.bootstrap import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    BootstrapError,
    BootstrapResult,
    BootstrapSettings,
    bootstrap_certificates,
    publish_ca_bundle,
    run_certificate_bootstrap,
)
from webhook.tls.certs import (
    CertificateError,
    CertificateInfo,
    KeyPair,
    describe_certificate,
    generate_ca,
    issue_serving_cert,
    key_matches_certificate,
    load_certificates,
    service_dns_names,
    verify_serving_certificate,
)
from webhook.tls.files import write_serving_files
from webhook.tls.reload import ReloadingCertificate, gunicorn_ssl_context, reloading_ssl_context
from webhook.tls.renewal import RenewalPolicy, TLSMaterial, plan_tls_material

__all__ = [
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "BootstrapError",
    "BootstrapResult",
    "BootstrapSettings",
    "CertificateError",
    "CertificateInfo",
    "KeyPair",
    "ReloadingCertificate",
    "RenewalPolicy",
    "TLSMaterial",
    "bootstrap_certificates",
    "describe_certificate",
    "generate_ca",
    "gunicorn_ssl_context",
    "issue_serving_cert",
    "key_matches_certificate",
    "load_certificates",
    "plan_tls_material",
    "publish_ca_bundle",
    "reloading_ssl_context",
    "run_certificate_bootstrap",
    "service_dns_names",
    "verify_serving_certificate",
    "write_serving_files",
]
