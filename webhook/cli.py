"""The `ccr-webhook` command: one subcommand per module under webhook/commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from webhook.config import ConfigError

# Each module under webhook/commands has `add_parser(subparsers)` that registers its subcommand with `func=run`;
# `copy` and `gc` live in copy_image.py and gc_images.py so that no module shadows the standard library's.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "serve",
    "check",
    "certs",
    "copy_image",
    "warm",
    "warmer",
    "gc_images",
    "front",
    "node_agent",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="ccr-webhook", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"webhook.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; configuration errors print one clear line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"ccr-webhook: configuration error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
