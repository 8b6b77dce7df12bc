"""When the certificates a process serves expire, as a Prometheus gauge read from disk at each scrape.

The servers reload their pair at every handshake (`reload.py`), and a scrape is itself a handshake, so the
file's certificate is the one being served; an alert can then fire while renewal still has time to act.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from webhook.tls.certs import CertificateError, describe_certificate

EXPIRY_METRIC = "ccr_webhook_tls_certificate_expiry_timestamp_seconds"
log = logging.getLogger(__name__)


class CertificateExpiry(Collector):
    """One series per certificate named in `certificates` (label value → PEM path): its notAfter, in Unix seconds.

    A file that cannot be read or parsed has no series at scrape time (and is logged): the alert on the
    missing series is the scrape's own `up`, and a half-written file must not look like an expired one.
    """

    def __init__(self, certificates: Mapping[str, str | None]) -> None:
        self._certificates = {name: path for name, path in certificates.items() if path}

    def collect(self) -> Iterator[Metric]:
        """The gauge family, one sample per readable certificate."""
        family = GaugeMetricFamily(
            EXPIRY_METRIC,
            "When the serving certificate expires (notAfter, Unix seconds), by certificate: serving or peer.",
            labels=["certificate"],
        )
        for name, path in self._certificates.items():
            try:
                not_after = describe_certificate(Path(path).read_bytes()).not_after
            except (OSError, CertificateError) as err:
                log.warning("TLS certificate %s at %s not read for its expiry: %s", name, path, err)
                continue
            family.add_metric([name], not_after.timestamp())
        yield family
