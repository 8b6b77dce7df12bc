"""The front's Prometheus metrics, in a registry of its own, served on the front's `/metrics`.

The names are an interface (dashboards, the benchmark): bytes from upstream, bytes served by source
(`ccr`: passed through from the CCR registry, `flight`: from a blob being fetched, `peer`: to other front
replicas), readers of in-flight blobs, time to the first byte of every answer with a body, blob fetches by
how they ended, those this replica ran from upstream as the owner, bytes received from owning peers, the
spool's fill and cap, when the served certificates expire, and answers by route and status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from webhook.tls.expiry import CertificateExpiry
from webhook.version import register_build_info

_FIRST_BYTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FETCH_OUTCOMES = (
    "committed",
    "present",
    "upstream-error",
    "invalid-content",
    "too-slow",
    "spool-full",
    "over-budget",
    "commit-failed",
)


class FrontMetrics:
    """The front's counters, gauges and histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, certificates: Mapping[str, str | None] | None = None) -> None:
        """`certificates`: the served certificates whose expiry to export (label value → PEM path)."""
        self.registry = CollectorRegistry()
        self.registry.register(CertificateExpiry(certificates or {}))
        self.spool_bytes = Gauge(
            "ccr_front_spool_bytes", "Bytes the spool holds or has set aside for fetches.", registry=self.registry
        )
        self.spool_capacity = Gauge(
            "ccr_front_spool_capacity_bytes",
            "The spool's byte cap (front.spoolMaxBytes): a fetch that would pass it is refused.",
            registry=self.registry,
        )
        register_build_info(self.registry)
        self.upstream_bytes = Counter(
            "ccr_front_upstream_bytes", "Blob bytes received from upstream registries.", registry=self.registry
        )
        self.served_bytes = Counter(
            "ccr_front_served_bytes",
            "Body bytes sent to clients, by source (ccr: through the registry, held: from its files; flight, peer).",
            ["source"],
            registry=self.registry,
        )
        self.flight_readers = Gauge(
            "ccr_front_flight_readers", "Clients reading a blob that is still being fetched.", registry=self.registry
        )
        self.first_byte = Histogram(
            "ccr_front_first_byte_seconds",
            "Seconds from a request to the first body byte sent.",
            buckets=_FIRST_BYTE_BUCKETS,
            registry=self.registry,
        )
        self.fetches = Counter(
            "ccr_front_fetches", "Upstream blob fetches that ended, by outcome.", ["outcome"], registry=self.registry
        )
        self.owned_fetches = Counter(
            "ccr_front_owned_fetches",
            "Blob transfers from upstream this replica ran as the digest's owner.",
            registry=self.registry,
        )
        self.peer_received_bytes = Counter(
            "ccr_front_peer_received_bytes",
            "Blob bytes received from the owning peer replica.",
            registry=self.registry,
        )
        self.requests = Counter(
            "ccr_front_requests",
            "Answers sent, by route (v2, manifest, blob, referrers, tags, catalog, metrics, healthz, peer_blob, other)"
            " and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        for source in ("ccr", "held", "flight", "peer"):
            self.served_bytes.labels(source)
        for outcome in FETCH_OUTCOMES:
            self.fetches.labels(outcome)

    def watch_spool(self, used: Callable[[], float], capacity: float) -> None:
        """Export the spool's fill, read at scrape time, and its cap."""
        self.spool_bytes.set_function(used)
        self.spool_capacity.set(capacity)

    def count_request(self, route: str, status: int) -> None:
        """One answer sent; `route` is a name from front.routes.ROUTES, never taken from the request itself."""
        self.requests.labels(route, str(status) if 100 <= status <= 599 else "other").inc()

    def exposition(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
