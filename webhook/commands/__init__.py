"""Subcommands of `ccr-webhook`, one module each, registered in webhook.cli.COMMAND_MODULES."""

from __future__ import annotations

import argparse
import os


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """`--config FILE`, required unless $CCR_WEBHOOK_CONFIG names the file (as the long-running processes take it)."""
    parser.add_argument(
        "--config",
        default=os.environ.get("CCR_WEBHOOK_CONFIG"),
        required=not os.environ.get("CCR_WEBHOOK_CONFIG"),
        metavar="FILE",
        help="the configuration file (default: $CCR_WEBHOOK_CONFIG)",
    )
