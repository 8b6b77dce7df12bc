"""Subcommands of `ccr-webhook`, one module each, registered in webhook.cli.COMMAND_MODULES."""

from __future__ import annotations

import argparse
import os

from webhook.config import Config, ConfigError, load_config


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """`--config FILE`, defaulting to $CCR_WEBHOOK_CONFIG: every subcommand that reads the configuration takes it so."""
    parser.add_argument(
        "--config",
        default=os.environ.get("CCR_WEBHOOK_CONFIG"),
        metavar="FILE",
        help="the configuration file (default: $CCR_WEBHOOK_CONFIG)",
    )


def configuration(args: argparse.Namespace) -> Config:
    """The configuration --config names; ConfigError (exit 2, one line) when neither it nor the environment does."""
    if not args.config:
        raise ConfigError("--config FILE is required (or set CCR_WEBHOOK_CONFIG)")
    return load_config(args.config)
