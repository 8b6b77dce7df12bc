"""`ccr-webhook warm`: fill the CCR before a rollout, so the first Pods already pull from it.

Each IMAGE (upstream, or its CCR name) is resolved upstream to a digest and copied, every platform, to
the name admission will rewrite it to: `<ccr>/<prefix>/<repository>:<tag>@<digest>`. An image the CCR
holds already costs a few HEAD requests.

Exit codes: 0 every image warmed (or there already), 1 any copy failed, 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from webhook.commands.copy_image import add_copy_options, load_registries
from webhook.commands.progress import CopyJob, run_copies
from webhook.config import Config
from webhook.copier.engine import CopyProgress, CopyResult, copy_warm_request
from webhook.policy.decide import NotMirrored, upstream_source, warm_request_for
from webhook.policy.reference import ImageReference, InvalidImageReference
from webhook.registry.client import Registries


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `warm`."""
    parser = subparsers.add_parser(
        "warm",
        help="copy images into the CCR ahead of a rollout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="an image, e.g. docker.io/library/nginx:1.25")
    add_copy_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check every image first (any bad one: exit 2, nothing copied), then warm them one by one."""
    config, registries = load_registries(args)
    try:
        sources, problems = [], []
        for image in args.images:
            try:
                sources.append(upstream_source(image, config))
            except (InvalidImageReference, NotMirrored) as err:
                problems.append(str(err))
        if problems:
            print("\n".join(f"ccr-webhook warm: {problem}" for problem in problems), file=sys.stderr)
            return 2
        jobs = [CopyJob(str(source), _warming(registries, config, source, args.concurrency)) for source in sources]
        return run_copies(jobs, sys.stdout, sys.stderr, verb="warmed")
    finally:
        registries.close()


def _warming(
    registries: Registries, config: Config, source: ImageReference, concurrency: int
) -> Callable[[Callable[[CopyProgress], None]], CopyResult]:
    """The copy of one image: its tag resolved upstream now, then copied to where admission will look."""

    def warm(progress: Callable[[CopyProgress], None]) -> CopyResult:
        digest = source.digest or registries.upstream(source.registry).resolve_digest(
            source.repository, source.tag or "latest"
        )
        request = warm_request_for(source, digest, config)
        return copy_warm_request(registries, request, concurrency=concurrency, progress=progress, limits=config.copy)

    return warm
