"""The warmer's Prometheus metrics, in a registry of its own, served on its metrics port.

The names are an interface: the Grafana dashboard and the alerts in manifests/components/monitoring
use them. `ccr_webhook_warms_total{result}` counts warms that ended (done, or failed for good);
`ccr_webhook_warm_failures_total{reason}` counts every failed copy attempt, retried or not, by cause.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from webhook.copier.engine import CopyResult
from webhook.registry.errors import (
    InsufficientStorage,
    NotFound,
    RateLimited,
    RegistryAuthError,
    RegistryNotAllowed,
    RegistryProtocolError,
    RegistryUnavailable,
)
from webhook.version import register_build_info
from webhook.warmer.queue import JobState, WarmJob

# Copies take from a fraction of a second (already there, small image) to many minutes (gigabytes).
_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (RegistryNotAllowed, "not-allowed"),
    (InsufficientStorage, "no-room"),
    (NotFound, "not-found"),
    (RegistryAuthError, "auth"),
    (RateLimited, "rate-limited"),
    (RegistryUnavailable, "unavailable"),
    (RegistryProtocolError, "protocol"),
)


def failure_reason(err: BaseException) -> str:
    """A short, bounded label for why a copy failed: the kind of registry error behind it, or `error`."""
    seen: BaseException | None = err
    while seen is not None:
        for kind, reason in _REASONS:
            if isinstance(seen, kind):
                return reason
        seen = seen.__cause__
    return "error"


class WarmerMetrics:
    """Every metric of the warmer; `depth` and `in_flight` are read from the queue at scrape time."""

    def __init__(self, depth: Callable[[], int], in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        register_build_info(self.registry)
        Gauge(
            "ccr_webhook_warm_queue_depth",
            "Images waiting to be copied into the CCR (backoff included).",
            registry=self.registry,
        ).set_function(depth)
        Gauge(
            "ccr_webhook_warm_in_flight", "Images being copied into the CCR now.", registry=self.registry
        ).set_function(in_flight)
        self.bytes = Counter(
            "ccr_webhook_warm_bytes",
            "Blob bytes copied into the CCR (skipped and mounted blobs not counted).",
            registry=self.registry,
        )
        self.duration = Histogram(
            "ccr_webhook_warm_duration_seconds",
            "Time one successful copy into the CCR took.",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.warms = Counter(
            "ccr_webhook_warms",
            "Warms that ended, by result: done, or failed after every attempt.",
            ["result"],
            registry=self.registry,
        )
        self.failures = Counter(
            "ccr_webhook_warm_failures", "Failed copy attempts, by reason.", ["reason"], registry=self.registry
        )
        self.hints = Counter(
            "ccr_webhook_warmer_hints",
            "Hints received from the webhook, by result: accepted or rejected.",
            ["result"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "ccr_webhook_warmer_leader",
            "1 while this replica holds the Lease and runs the Pod watch.",
            registry=self.registry,
        )
        for result in ("done", "failed"):
            self.warms.labels(result)
        for result in ("accepted", "rejected"):
            self.hints.labels(result)

    def job_changed(self, job: WarmJob) -> None:
        """Count a warm that ended."""
        if job.state is JobState.DONE:
            self.warms.labels("done").inc()
            if isinstance(job.result, CopyResult):
                self.bytes.inc(job.result.bytes_copied)
                self.duration.observe(job.result.seconds)
        elif job.state is JobState.FAILED:
            self.warms.labels("failed").inc()

    def attempt_failed(self, err: BaseException) -> None:
        """Count one failed copy attempt by its reason."""
        self.failures.labels(failure_reason(err)).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
