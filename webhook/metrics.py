"""Prometheus metrics, right across gunicorn workers.

Multiprocess mode: prometheus_client picks it when first imported, from PROMETHEUS_MULTIPROC_DIR, so
`ccr-webhook serve` sets that variable before anything imports this module. Each worker then writes its
samples to files there, and /metrics sums every worker's files, dead workers' counters included.
Without the variable (tests, tools) the samples live in the given registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Admission answers take milliseconds from cache and up to the deadline (seconds) when registries are slow.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class Metrics:
    """Every metric ccr-webhook exports, created once per process and passed in."""

    registry: CollectorRegistry
    admission_requests: Counter
    admission_duration: Histogram
    decisions: Counter
    resolver_lookups: Counter
    internal_errors: Counter

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type: every worker's samples in multiprocess mode."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def create_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    """Create the metrics in `registry` (a fresh one when None, so tests and app instances do not collide)."""
    registry = registry if registry is not None else CollectorRegistry()
    return Metrics(
        registry=registry,
        admission_requests=Counter(
            "ccr_webhook_admission_requests", "AdmissionReview requests answered, by endpoint and HTTP status code.",
            ["endpoint", "code"], registry=registry,
        ),
        admission_duration=Histogram(
            "ccr_webhook_admission_duration_seconds", "Time to answer an AdmissionReview, by endpoint.",
            ["endpoint"], buckets=_DURATION_BUCKETS, registry=registry,
        ),
        decisions=Counter(
            "ccr_webhook_decisions", "Image decisions, by policy action and mode (enforce or dry-run).",
            ["action", "mode"], registry=registry,
        ),
        resolver_lookups=Counter(
            "ccr_webhook_resolver_lookups", "Resolver lookups, by result: hit (cache), miss (asked a registry), error.",
            ["result"], registry=registry,
        ),
        internal_errors=Counter(
            "ccr_webhook_internal_errors", "Unexpected errors while answering; the Pod was admitted unchanged.",
            registry=registry,
        ),
    )


def forget_worker(pid: int) -> None:
    """Drop a dead worker's live-gauge files (gunicorn's child_exit hook); its counters keep counting."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
