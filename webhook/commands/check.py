"""`ccr-webhook check`: the admission policy as a dry run over manifest files, so CI fails before the cluster does.

An image whose tag its upstream says does not exist (404) is denied here, whatever policy.onResolveError
says (that setting is about registries that cannot answer): no Pod could ever pull it.

Exit codes: 0 nothing would be denied, 1 something would be denied, 2 unreadable input or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from webhook.commands import add_config_argument, configuration, registries_of
from webhook.config import Config
from webhook.policy.report import (
    Verdict,
    decide_for_check,
    offline_verdicts,
    render_table,
    report_json,
    summarize,
    summary_line,
    verdict_of,
)
from webhook.policy.workloads import Document, ManifestError, find_images, looks_like_json, parse_documents
from webhook.registry.evaluate import evaluate_images
from webhook.registry.resolver import RegistrySource, Resolver

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `check`."""
    parser = subparsers.add_parser(
        "check",
        help="dry-run the admission policy over manifest files (for CI)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="manifest file or directory (*.yaml, *.yml, *.json); - reads stdin"
    )
    add_config_argument(parser)
    parser.add_argument(
        "--offline", action="store_true", help="never contact a registry; report what needs one as undecided"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long registry lookups may take in all (default: 30); what is not known by then "
        "is handled as policy.onResolveError says",
    )
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format (default: table)"
    )
    parser.set_defaults(func=run)


def _seconds(text: str) -> float:
    """A positive number of seconds, for argparse."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return seconds


def run(args: argparse.Namespace) -> int:
    """Read the manifests, judge every image, print the report; exit 1 if anything would be denied."""
    config = configuration(args)
    try:
        inventory = find_images(read_documents(args.paths, sys.stdin))
    except ManifestError as err:
        print(f"ccr-webhook check: {err}", file=sys.stderr)
        return 2
    images = list(dict.fromkeys(found.image for found in inventory.images))
    verdicts = offline_verdicts(images, config) if args.offline else _ask_registries(images, config, args.timeout)
    by_image = dict(zip(images, verdicts, strict=True))
    results = [(found, by_image[found.image]) for found in inventory.images]
    summary = summarize(inventory, results, args.offline)
    if args.output == "json":
        print(json.dumps(report_json(results, summary), indent=2))
    else:
        print(render_table(results, shutil.get_terminal_size((120, 24)).columns))
        print(summary_line(summary))
    return 1 if summary["denied"] else 0


def _ask_registries(images: Sequence[str], config: Config, timeout: float) -> list[Verdict]:
    registries = registries_of(config)
    try:
        return online_verdicts(images, config, registries, timeout)
    finally:
        registries.close()


def online_verdicts(images: Sequence[str], config: Config, registries: RegistrySource, timeout: float) -> list[Verdict]:
    """Verdicts as admission would give them, asking the configured registries (and no others) within `timeout`."""
    decisions = evaluate_images(images, config, Resolver(config, registries), timeout, decide_for_check)
    return [verdict_of(decision) for decision in decisions]


def read_documents(paths: Sequence[str], stdin: TextIO) -> list[Document]:
    """Every document in `paths` (files, directories searched for manifests, `-` for stdin), in order."""
    documents: list[Document] = []
    for path in paths:
        if path == "-":
            text = stdin.read()
            documents.extend(parse_documents(text, "<stdin>", looks_like_json(text)))
            continue
        for file in manifest_files(Path(path)):
            documents.extend(parse_documents(_read_text(file), str(file), file.suffix == ".json"))
    return documents


def manifest_files(path: Path) -> list[Path]:
    """`path` itself if a file; the manifests below it (hidden entries left out, sorted) if a directory."""
    if path.is_dir():
        found: list[Path] = []
        for root, dirs, files in os.walk(path, onerror=_unreadable_directory):
            dirs[:] = sorted(name for name in dirs if not name.startswith("."))
            found.extend(
                Path(root, name)
                for name in sorted(files)
                if name.endswith(MANIFEST_SUFFIXES) and not name.startswith(".")
            )
        return found
    if not path.exists():
        raise ManifestError(str(path), "no such file or directory")
    return [path]


def _unreadable_directory(err: OSError) -> None:
    raise ManifestError(str(err.filename), f"cannot read: {err.strerror}")


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError(str(file), "not UTF-8 text") from None
    except OSError as err:
        raise ManifestError(str(file), f"cannot read: {err.strerror}") from None
