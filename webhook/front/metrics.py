"""The front's Prometheus metrics, in a registry of its own, served on the front's `/metrics`.

The names are an interface (dashboards, the benchmark): bytes from upstream, bytes served by source
(`ccr`: passed through from the CCR registry, `flight`: from a blob being fetched, `peer`: to other front
replicas), readers of in-flight blobs, time to the first byte of every answer with a body, blob fetches by
how they ended, those this replica ran from upstream as the owner, and bytes received from owning peers.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_FIRST_BYTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FETCH_OUTCOMES = (
    "committed",
    "present",
    "upstream-error",
    "invalid-content",
    "too-slow",
    "spool-full",
    "commit-failed",
)


class FrontMetrics:
    """The front's counters, gauges and histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        for source in ("ccr", "held", "flight", "peer"):
            self.served_bytes.labels(source)
        for outcome in FETCH_OUTCOMES:
            self.fetches.labels(outcome)

    def exposition(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
