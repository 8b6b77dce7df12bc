"""The retention metrics: what the CCR holds, what is in use, and what retention evicted."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RetentionMetrics:
    """Retention's metrics, in the registry given (the warmer's), created once per process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.ccr_bytes = Gauge(
            "ccr_webhook_ccr_bytes",
            "Unique blob bytes of the images in the CCR, by repository, as of the last retention run.",
            ["repository"],
            registry=self.registry,
        )
        self.evictions = Counter(
            "ccr_webhook_evictions", "Images evicted from the CCR by retention.", registry=self.registry
        )
        self.evicted_bytes = Counter(
            "ccr_webhook_evicted_bytes",
            "Blob bytes released by evictions (freed by the registry's garbage collection).",
            registry=self.registry,
        )
        self.storage_bytes = Gauge(
            "ccr_webhook_storage_bytes",
            "Unique blob bytes of the mirrored images in the CCR (each blob once), as of the last retention run.",
            registry=self.registry,
        )
        self.storage_budget_bytes = Gauge(
            "ccr_webhook_storage_budget_bytes",
            "retention.maxBytes, the CCR's storage budget (0: none).",
            registry=self.registry,
        )
        self.in_use_digests = Gauge(
            "ccr_webhook_in_use_digests",
            "CCR digests named by live workloads, as of the last retention run.",
            registry=self.registry,
        )

    def set_holdings(self, bytes_by_repository: dict[str, int], in_use_digests: int) -> None:
        """Replace the CCR's bytes per repository (repositories gone drop out) and the in-use count."""
        self.ccr_bytes.clear()
        for repository, size in bytes_by_repository.items():
            self.ccr_bytes.labels(repository).set(size)
        self.in_use_digests.set(in_use_digests)

    def set_storage(self, stored_bytes: int, max_bytes: int | None) -> None:
        """The CCR's bytes after a run, and the budget they are held to."""
        self.storage_bytes.set(stored_bytes)
        self.storage_budget_bytes.set(max_bytes or 0)

    def count_eviction(self, freed_bytes: int) -> None:
        """One image evicted, releasing `freed_bytes`."""
        self.evictions.inc()
        self.evicted_bytes.inc(freed_bytes)
