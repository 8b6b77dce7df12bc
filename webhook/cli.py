"""The `ccr-webhook` command: one subcommand per module under webhook/commands.

Exit codes: 0 done, 1 a policy verdict or an operation that failed (a denial, a missing tag, a copy),
2 a usage or input error (the command line, a file, the configuration, no cluster to talk to).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from webhook.config import ConfigError
from webhook.copier.engine import CopyError
from webhook.errors import CCRWebhookError
from webhook.registry.errors import RegistryError
from webhook.version import VERSION

OK, FAILED, USAGE = 0, 1, 2
# What `yes | head` exits with: the reader went away, the rest of the output has nowhere to go (128 + SIGPIPE).
CLOSED_PIPE = 141

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


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error in two lines (what is wrong, where help is) rather than the whole usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message}\n(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered (their parsers are _Parsers too)."""
    parser = _Parser(prog="ccr-webhook", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ccr-webhook {VERSION}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"webhook.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; an error of ours prints one line and exits 1 or 2, a bug keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that went away is then a BrokenPipeError caught below
        return status
    except CCRWebhookError as err:
        print(error_line(args.command, err), file=sys.stderr)
        return FAILED if isinstance(err, RegistryError | CopyError) else USAGE
    except BrokenPipeError:
        # `ccr-webhook check -o json | head`: nothing more can be written; point stdout at /dev/null so that
        # the interpreter's own flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE
    except KeyboardInterrupt:
        return 130


def error_line(command: str, err: CCRWebhookError) -> str:
    """`ccr-webhook COMMAND: what is wrong`, on one line however the message was wrapped."""
    kind = "configuration error: " if isinstance(err, ConfigError) else ""
    return f"ccr-webhook {command}: {kind}{' '.join(str(err).split())}"


if __name__ == "__main__":
    sys.exit(main())
