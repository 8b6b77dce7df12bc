"""What the TLS tests share: the webhook Service's names, a renewal policy, and a certificate's serial number."""

from __future__ import annotations

from cryptography import x509

from webhook import tls

HOST = "ccr-webhook.ccr-system.svc"
NAMES = tls.service_dns_names("ccr-webhook", "ccr-system")
POLICY = tls.RenewalPolicy(serving_days=90, ca_days=3650)


def serial(pem: bytes) -> int:
    """The serial number of the PEM certificate `pem`."""
    return x509.load_pem_x509_certificate(pem).serial_number
