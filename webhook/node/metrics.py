"""The node agent's Prometheus metrics, in a registry of its own, served on the agent's `/metrics`.

`ccr_node_agent_ready` says whether this node pulls through the CCR front as written (1) or not (0, with the
reason in the log and a node Event); the fallback's counters say what was pulled from upstream while the
front could not serve it: requests by kind and outcome, and body bytes sent.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from webhook.version import register_build_info

FALLBACK_OUTCOMES = ("served", "not-found", "refused", "upstream-error", "cut")


class NodeMetrics:
    """The agent's gauges and counters."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        register_build_info(self.registry)
        self.ready = Gauge(
            "ccr_node_agent_ready",
            "1 when this node's hosts.toml and CA are written and the front verifies at the address written.",
            registry=self.registry,
        )
        self.writes = Counter(
            "ccr_node_agent_writes", "Files (hosts.toml, ca.crt) written on the node.", ["file"], registry=self.registry
        )
        self.fallback_requests = Counter(
            "ccr_node_fallback_requests",
            "Pull requests the node-local fallback answered from upstream, by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.fallback_bytes = Counter(
            "ccr_node_fallback_bytes", "Body bytes the fallback sent to containerd.", registry=self.registry
        )

    def exposition(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))
