"""`ccr-webhook copy`: copy one image, every platform, between configured registries (the CCR and its upstreams).

SRC must be in a configured upstream or the CCR, DST in the CCR or a configured upstream: no other registry
is ever contacted. A DST without a tag takes SRC's tag; with a digest, it must be SRC's digest.

Exit codes: 0 copied (or there already), 1 the copy failed, 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import sys

from webhook.commands import add_config_argument, configuration, positive_int, registries_of
from webhook.commands.progress import CopyJob, run_copies
from webhook.config import Config
from webhook.copier.engine import copy_image
from webhook.policy.reference import InvalidImageReference, parse_image
from webhook.registry.client import Registries, RegistryClient
from webhook.registry.errors import RegistryNotAllowed


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `copy`."""
    parser = subparsers.add_parser(
        "copy",
        help="copy an image between the CCR and its configured upstreams",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SRC", help="the image to copy, e.g. docker.io/library/nginx:1.25")
    parser.add_argument("destination", metavar="DST", help="where to, e.g. ccr.example:5000/mirror/nginx:1.25")
    add_copy_options(parser)
    parser.set_defaults(func=run)


def add_copy_options(parser: argparse.ArgumentParser) -> None:
    """The options every copying command takes: the configuration, and how many blobs move at once."""
    add_config_argument(parser)
    parser.add_argument(
        "--concurrency", type=positive_int, default=4, metavar="N", help="blobs copied at once (default: 4)"
    )


def load_registries(args: argparse.Namespace) -> tuple[Config, Registries]:
    """The configuration named by --config and its registry clients; ConfigError (exit 2) when unusable."""
    config = configuration(args)
    return config, registries_of(config)


def run(args: argparse.Namespace) -> int:
    """Check both images against the configuration, then copy with progress."""
    config, registries = load_registries(args)
    try:
        try:
            source, destination = parse_image(args.source), parse_image(args.destination)
            source_client = _client(registries, config, source.registry)
            target_client = _client(registries, config, destination.registry)
        except (InvalidImageReference, RegistryNotAllowed) as err:
            print(f"ccr-webhook copy: {err}", file=sys.stderr)
            return 2
        if destination.digest and destination.digest != source.digest:
            print(
                f"ccr-webhook copy: DST names digest {destination.digest}, which is not SRC's; give DST a tag "
                "or SRC's digest",
                file=sys.stderr,
            )
            return 2
        known = (source.repository,) if source_client is target_client else ()  # the same registry: mount
        job = CopyJob(
            f"{source} to {destination}",
            lambda progress: copy_image(
                source_client,
                source.repository,
                source.reference or "latest",
                target_client,
                destination.repository,
                tag=destination.tag or source.tag,
                concurrency=args.concurrency,
                known_repositories=known,
                progress=progress,
                limits=config.copy,
                attached=True,
            ),
        )
        return run_copies([job], sys.stdout, sys.stderr)
    finally:
        registries.close()


def _client(registries: Registries, config: Config, registry: str) -> RegistryClient:
    """The CCR's client, or a configured upstream's; RegistryNotAllowed for any other registry."""
    return registries.ccr if registry == config.ccr.registry else registries.upstream(registry)
