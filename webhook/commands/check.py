"""`ccr-webhook check`: the admission policy as a dry run over manifest files, so CI fails before the cluster does.

Exit codes: 0 nothing would be denied, 1 something would be denied, 2 unreadable input or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from webhook.config import Config, load_config
from webhook.manifests import Document, Inventory, ManifestError, WorkloadImage, find_images, looks_like_json, parse_documents
from webhook.policy import Action, Decision, ImageFacts, Lookup, decide_image, plan_image

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
OFFLINE_REASON = "needs registry lookup; skipped (--offline)"
_ANY_DIGEST = "sha256:" + "0" * 64
_CONTAINER_ROLES = {"initContainers": "init", "ephemeralContainers": "ephemeral"}
_LONG_DIGEST = re.compile(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What admission would do with an image; `decided` is False when --offline left out the registry facts."""

    action: str
    reason: str
    new_image: str | None
    decided: bool


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `check`."""
    parser = subparsers.add_parser(
        "check",
        help="dry-run the admission policy over manifest files (for CI)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="manifest file or directory (*.yaml, *.yml, *.json); - reads stdin")
    parser.add_argument("--config", default=os.environ.get("CCR_WEBHOOK_CONFIG"), metavar="FILE",
                        help="the webhook configuration (default: $CCR_WEBHOOK_CONFIG)")
    parser.add_argument("--offline", action="store_true", help="never contact a registry; report what needs one as undecided")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format (default: table)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the manifests, judge every image, print the report; exit 1 if anything would be denied."""
    if not args.config:
        print("ccr-webhook check: --config FILE is required (or set CCR_WEBHOOK_CONFIG)", file=sys.stderr)
        return 2
    config = load_config(args.config)
    try:
        inventory = find_images(read_documents(args.paths, sys.stdin))
    except ManifestError as err:
        print(f"ccr-webhook check: {err}", file=sys.stderr)
        return 2
    images = list(dict.fromkeys(found.image for found in inventory.images))
    verdicts = dict(zip(images, offline_verdicts(images, config)))
    results = [(found, verdicts[found.image]) for found in inventory.images]
    if args.output == "json":
        print(json.dumps({"results": [_result_json(*result) for result in results],
                          "summary": summarize(inventory, results, args.offline)}, indent=2))
    else:
        print(render_table(results, shutil.get_terminal_size((120, 24)).columns))
        print(summary_line(summarize(inventory, results, args.offline)))
    return 1 if any(verdict.action == Action.DENY.value for _, verdict in results) else 0


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
            found.extend(Path(root, name) for name in sorted(files)
                         if name.endswith(MANIFEST_SUFFIXES) and not name.startswith("."))
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


def offline_verdicts(images: Sequence[str], config: Config) -> list[Verdict]:
    """Verdicts from the image strings and the configuration alone; what needs registry facts stays undecided."""
    plans = [plan_image(image, config) for image in images]
    return [_from_decision(plan) if isinstance(plan, Decision) else _undecided(plan, config) for plan in plans]


def _from_decision(decision: Decision) -> Verdict:
    return Verdict(decision.action.value, decision.reason, decision.new_image, decided=True)


def _undecided(lookup: Lookup, config: Config) -> Verdict:
    """The actions the registries' answers could lead to (e.g. `pin/rewrite`): decide once per answer the CCR could give."""
    digest = lookup.source.digest or _ANY_DIGEST
    outcomes = (decide_image(lookup, ImageFacts(digest=digest, in_ccr=held), config) for held in (False, True))
    return Verdict("/".join(dict.fromkeys(outcome.action.value for outcome in outcomes)), OFFLINE_REASON, None, decided=False)


def _result_json(found: WorkloadImage, verdict: Verdict) -> dict[str, object]:
    return {**asdict(found), **asdict(verdict)}


def summarize(inventory: Inventory, results: Sequence[tuple[WorkloadImage, Verdict]], offline: bool) -> dict[str, object]:
    """The counts CI wants at a glance: by action, and what was read and skipped."""
    return {
        "images": len(results),
        "workloads": inventory.workloads,
        "objects": inventory.objects,
        "documents": inventory.documents,
        "skipped_kinds": dict(sorted(inventory.skipped.items())),
        "actions": dict(sorted(Counter(verdict.action for _, verdict in results).items())),
        "undecided": sum(not verdict.decided for _, verdict in results),
        "offline": offline,
    }


def summary_line(summary: dict[str, object]) -> str:
    """One line: `N images in W workloads (D documents; skipped: 1 Service): 1 deny, 2 rewrite`."""
    read = f"{summary['documents']} documents"
    if summary["objects"] != summary["documents"]:
        read += f" holding {summary['objects']} objects"
    skipped = ", ".join(f"{count} {kind}" for kind, count in summary["skipped_kinds"].items()) or "none"
    actions = ", ".join(f"{count} {action}" for action, count in summary["actions"].items()) or "nothing to do"
    line = f"{summary['images']} images in {summary['workloads']} workloads ({read}; skipped: {skipped}): {actions}"
    if summary["undecided"]:
        line += f" ({summary['undecided']} undecided: {OFFLINE_REASON})"
    return line


# Column headers with the widest a cell may grow (None: as wide as it needs); longer cells are cut in the middle.
# The last column is never cut: it wraps within the terminal, its continuation lines indented under it.
COLUMNS: tuple[tuple[str, int | None], ...] = (
    ("KIND", None), ("NAMESPACE/NAME", 28), ("CONTAINER", 16), ("IMAGE", 40), ("ACTION", None), ("RESULT/REASON", None),
)
IMAGE_COLUMN, MIN_IMAGE_WIDTH, MIN_LAST_COLUMN = 3, 32, 24


def render_table(results: Sequence[tuple[WorkloadImage, Verdict]], width: int = 120) -> str:
    """An aligned table, one row per container image, fitted to `width` columns; digests shortened as `docker` does."""
    rows = [tuple(header for header, _ in COLUMNS)] + [_cells(found, verdict) for found, verdict in results]
    natural = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    widths = [size if cap is None else min(cap, size) for size, (_, cap) in zip(natural, COLUMNS)]
    overflow = sum(widths) + 2 * len(widths) + MIN_LAST_COLUMN - width
    widths[IMAGE_COLUMN] -= max(0, min(overflow, widths[IMAGE_COLUMN] - MIN_IMAGE_WIDTH))
    indent = sum(widths) + 2 * len(widths)
    lines = []
    for row in rows:
        left = "  ".join(_fit(cell, size).ljust(size) for cell, size in zip(row, widths)) + "  "
        wrapped = textwrap.wrap(row[-1], max(MIN_LAST_COLUMN, width - indent), break_long_words=False) or [""]
        lines.append((left + wrapped[0]).rstrip())
        lines.extend(" " * indent + more for more in wrapped[1:])
    return "\n".join(lines)


def _cells(found: WorkloadImage, verdict: Verdict) -> tuple[str, ...]:
    name = f"{found.namespace}/{found.name}" if found.namespace else found.name
    role = _CONTAINER_ROLES.get(found.container_list)
    container = f"{found.container} ({role})" if role else found.container
    result = verdict.new_image or verdict.reason
    return (found.kind, name, container, _short_digest(found.image) or '""', verdict.action, _short_digest(result))


def _short_digest(text: str) -> str:
    return _LONG_DIGEST.sub(r"\1...", text)


def _fit(cell: str, width: int) -> str:
    """`cell` cut in the middle with `...` to `width`, keeping the registry at the front and the tag at the end."""
    if len(cell) <= width:
        return cell
    head = (width - 3 + 1) // 2
    return cell[:head] + "..." + cell[len(cell) - (width - 3 - head):]
