"""`ccr-webhook node-agent`: containerd's hosts.toml and CA for the CCR on this node, and the upstream fallback.

    ccr-webhook node-agent --config FILE [--kubeconfig FILE]

Runs on every node (a DaemonSet, host network): writes `<nodes.configPath>/<ccr.registry>/hosts.toml` and
`ca.crt` and keeps them current (the Service's ClusterIP, a rotated CA), serves the node-local fallback
containerd tries when the front does not answer (digest-pinned pulls from upstream, verified), and `/healthz`,
`/readyz`, `/metrics` on `nodes.listen`. On SIGTERM (or SIGINT) it exits, removing what it wrote when its
DaemonSet is gone or being deleted (an uninstall; a rollout keeps the files for the next agent).
"""

from __future__ import annotations

import argparse
import logging

from webhook.commands import add_config_argument, configuration, stop_on_signals
from webhook.config.view import effective_view
from webhook.listen import ensure_free
from webhook.logs import log_start, setup_logging
from webhook.version import VERSION


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `node-agent`."""
    parser = subparsers.add_parser(
        "node-agent",
        help="keep containerd's hosts.toml and CA for the CCR on this node, with an upstream fallback",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, then $KUBECONFIG)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve and keep the node's files current until SIGTERM or SIGINT; then remove them."""
    from webhook.kube.client import kubernetes_client
    from webhook.node.service import run_node_agent

    setup_logging()
    config = configuration(args)
    settings = config.nodes
    ensure_free(settings.listen, "nodes.listen")
    if settings.fallback_listen:
        ensure_free(settings.fallback_listen, "nodes.fallbackListen")
    log_start(
        logging.getLogger("webhook.node"),
        VERSION,
        effective_view(config),
        listen=settings.listen,
        fallback=settings.fallback_listen,
    )
    needs_api = settings.front_address is None or settings.node_name is not None
    stop = stop_on_signals()
    run_node_agent(config, kubernetes_client(args.kubeconfig) if needs_api else None, stop)
    return 0
