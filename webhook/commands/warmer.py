"""`ccr-webhook warmer`: the sidecar that copies images into the CCR, from hints and from watching Pods.

    ccr-webhook warmer --config FILE [--kubeconfig FILE] [--identity NAME]

Runs until SIGTERM (or SIGINT), then stops taking hints, releases its Lease and lets running copies
finish for up to --grace seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import uuid

from webhook.commands import add_config_argument, configuration, stop_on_signals
from webhook.config.view import effective_view
from webhook.kube.client import kubernetes_client
from webhook.listen import ensure_free
from webhook.logs import log_start, setup_logging
from webhook.version import VERSION


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `warmer`."""
    parser = subparsers.add_parser(
        "warmer",
        help="run the warmer sidecar (copies images into the CCR)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, then $KUBECONFIG)")
    parser.add_argument(
        "--identity",
        default=default_identity(),
        help="this replica's name in the Lease (default: $POD_NAME or the host name, with a random suffix)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long running copies may take to finish on SIGTERM (default: 20)",
    )
    parser.set_defaults(func=run)


def default_identity() -> str:
    """A name unique to this process: a restarted warmer must not be taken for the one that held the Lease."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def run(args: argparse.Namespace) -> int:
    """Run the warmer until SIGTERM or SIGINT."""
    from webhook.warmer.service import Warmer  # the kubernetes client is slow to import; only this command needs it

    setup_logging()
    config = configuration(args)
    ensure_free(config.warmer.listen, "warmer.listen")
    ensure_free(config.warmer.metrics_listen, "warmer.metricsListen")
    api = kubernetes_client(args.kubeconfig)
    log = logging.getLogger("webhook.warmer")
    log_start(log, VERSION, effective_view(config), identity=args.identity, listen=config.warmer.listen)
    stop = stop_on_signals()
    warmer = Warmer(config, api, identity=args.identity).start()
    stop.wait()
    log.info("stopping")
    warmer.stop(args.grace)
    return 0
