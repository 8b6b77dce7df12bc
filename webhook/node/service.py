"""The node agent process wired together: the agent's passes, the fallback server, and the probe port."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from webhook.config import Config
from webhook.http_service import JSON, TEXT, HTTPService, Reply, Request
from webhook.node.agent import NodeAgent
from webhook.node.fallback import Fallback
from webhook.node.metrics import NodeMetrics

log = logging.getLogger("webhook.node")


def run_node_agent(config: Config, api_client: Any | None, stop: threading.Event) -> None:
    """Serve the fallback and the probes, keep the node's files current until `stop`, then remove them."""
    settings = config.nodes
    metrics = NodeMetrics()
    agent = NodeAgent(config, metrics, api_client)

    def ready(_: Request) -> Reply:
        status = agent.status
        body = json.dumps({"ready": status.ready, "reason": status.reason, "message": status.message}) + "\n"
        return Reply(200 if status.ready else 503, body.encode(), JSON)

    probes = HTTPService(
        settings.listen,
        {
            ("GET", "/healthz"): lambda _: Reply(200, b"ok\n", TEXT),
            ("GET", "/readyz"): ready,
            ("GET", "/metrics"): lambda _: Reply(200, metrics.exposition(), metrics.content_type),
        },
        name="node-agent-probes",
        loopback_only=True,
        probes=("/healthz", "/readyz"),  # answered by the server's loop, whatever its threads are doing
    ).start()
    fallback = Fallback(config, metrics).serve(settings.fallback_listen) if settings.fallback_listen else None
    if fallback is not None:
        threading.Thread(
            target=fallback.serve_forever, kwargs={"poll_interval": 0.2}, name="node-fallback", daemon=True
        ).start()
    log.info("node agent: writing %s, fallback on %s", agent.files.directory, settings.fallback_listen or "none")
    try:
        agent.run(stop)
    finally:
        if fallback is not None:
            fallback.shutdown()
            fallback.server_close()
        probes.stop()
