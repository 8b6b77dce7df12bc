"""Subcommands of `ccr-webhook`, one module each, registered in webhook.cli.COMMAND_MODULES."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from webhook.config import Config, ConfigError, load_config
from webhook.errors import CCRWebhookError
from webhook.registry.client import Registries
from webhook.registry.errors import RegistryAuthError


class UsageError(CCRWebhookError):
    """The command line names something unusable (a file that is not there, a value out of range): exit 2."""


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


def registries_of(config: Config) -> Registries:
    """The registry clients of `config`; an unreadable credentials file is a ConfigError (exit 2, one line)."""
    try:
        return Registries(config)
    except RegistryAuthError as err:
        raise ConfigError(str(err)) from None


def read_input(path: Path, what: str, hint: str = "") -> bytes:
    """The bytes of a file the user named; UsageError naming `what` it should be (and `hint`) if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror or err}{hint}") from None


def positive_int(text: str) -> int:
    """A whole number of at least 1, for argparse."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def stop_on_signals() -> threading.Event:
    """An Event set by SIGTERM (the kubelet stopping the Pod) or SIGINT: what a long-running command waits on."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop
