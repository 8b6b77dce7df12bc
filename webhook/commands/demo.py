"""`ccr-webhook demo`: the main job on an embedded default, all on loopback, with an account of what happened."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="run the webhook, the warmer and two local registries, and send sample Pods through",
        description="Starts two local distribution registries (an upstream and the CCR), an in-memory Kubernetes "
        "API, the webhook over TLS and the warmer, all on 127.0.0.1; sends sample Pods through "
        "/mutate and /dry-run and prints what happened. Exit 0 when everything happened as described.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from webhook.testing.demo import run_demo  # the demo pulls in the kubernetes client; only this command needs it

    return run_demo()
