"""Prometheus metrics, right across gunicorn workers.

Multiprocess mode: prometheus_client picks it when first imported, from PROMETHEUS_MULTIPROC_DIR, so
`ccr-webhook serve` sets that variable before anything imports this module. Each worker then writes its
samples to files there, and /metrics sums every worker's files, dead workers' counters included.
Without the variable (tests, tools) the samples live in the given registry.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from webhook.policy.decide import Action, Decision
from webhook.policy.review import Mode
from webhook.tls.expiry import CertificateExpiry
from webhook.version import register_build_info

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOOKUP_RESULTS = ("hit", "miss", "error")
OTHER_REGISTRY = "other"  # the `registry` label of a lookup at a registry the configuration does not name
# Admission answers take milliseconds from cache and up to the deadline (seconds) when registries are slow.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    """Every metric ccr-webhook exports, created once per process and passed in.

    Label values known in advance are bound once here: a labels() lookup per increment is measurable
    on the admission hot path, and pre-bound series show up as 0 before they first happen.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        registries: Iterable[str] = (),
        certificates: Mapping[str, str | None] | None = None,
    ) -> None:
        """`registries`: the registries the resolver asks (the configured upstreams and the CCR), the only
        values of the lookups' `registry` label besides `other`, so its series stay bounded.
        `certificates`: the served certificates whose expiry to export (label value → PEM path)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self._expiry = CertificateExpiry(certificates or {})
        self.registry.register(self._expiry)
        self.admission_requests = Counter(
            "ccr_webhook_admission_requests",
            "AdmissionReview requests answered, by endpoint and HTTP status code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.admission_duration = Histogram(
            "ccr_webhook_admission_duration_seconds",
            "Time to answer an AdmissionReview, by endpoint.",
            ["endpoint"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "ccr_webhook_decisions",
            "Image decisions, by policy action and mode (enforce or dry-run).",
            ["action", "mode"],
            registry=self.registry,
        )
        self.resolver_lookups = Counter(
            "ccr_webhook_resolver_lookups",
            "Resolver lookups, by result: hit (cache), miss (asked a registry), error; and by registry: the "
            "upstream looked up, or the CCR (a registry not configured counts as `other`).",
            ["result", "registry"],
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "ccr_webhook_internal_errors",
            "Unexpected errors while answering; the Pod was admitted unchanged.",
            registry=self.registry,
        )
        self.warm_hints = Counter(
            "ccr_webhook_warm_hints",
            "Warm hints for the warmer, by result: sent, or dropped (warmer down, backlog full).",
            ["result"],
            registry=self.registry,
        )
        self._requests: dict[tuple[str, int], Any] = {}
        self._durations: dict[str, Any] = {}
        self._decisions = {(a, m): self.decisions.labels(a.value, m.value) for a in Action for m in Mode}
        self._lookups = {
            (result, name): self.resolver_lookups.labels(result, name)
            for result in LOOKUP_RESULTS
            for name in {*registries, OTHER_REGISTRY}
        }
        register_build_info(self.registry)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        requests = self._requests.get((endpoint, code))
        if requests is None:
            requests = self._requests[endpoint, code] = self.admission_requests.labels(endpoint, str(code))
        duration = self._durations.get(endpoint)
        if duration is None:
            duration = self._durations[endpoint] = self.admission_duration.labels(endpoint)
        requests.inc()
        duration.observe(seconds)

    def count_decisions(self, decisions: Iterable[Decision], mode: Mode) -> None:
        """Count image decisions: one increment per distinct action, as each is a write to shared memory."""
        for action, count in collections.Counter(decision.action for decision in decisions).items():
            self._decisions[action, mode].inc(count)

    def count_internal_error(self) -> None:
        """Count one unexpected error answered by admitting the Pod unchanged."""
        self.internal_errors.inc()

    def count_hints(self, result: str, count: int) -> None:
        """Count warm hints sent or dropped: the hint client's `on_result` callback."""
        self.warm_hints.labels(result).inc(count)

    def count_lookup(self, result: str, registry: str) -> None:
        """Count one resolver lookup at `registry`: the resolver's `observe` callback."""
        lookups = self._lookups.get((result, registry)) or self._lookups[result, OTHER_REGISTRY]
        lookups.inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type: every worker's samples in multiprocess mode."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(self._expiry)  # read at scrape time, by the worker answering it
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def forget_worker(pid: int) -> None:
    """Drop a dead worker's live-gauge files (gunicorn's child_exit hook); its counters keep counting."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
