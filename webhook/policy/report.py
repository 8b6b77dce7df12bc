"""The dry run of the admission policy over workload images: verdicts, and the report as a table, a summary or JSON.

Pure, like the policy it reports on: `check` reads the files, asks the registries and prints; this module
only turns images and decisions into what a person or a CI job reads.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TypedDict

from webhook.config import Config
from webhook.policy.decide import Action, Decision, ImageFacts, Lookup, decide_image, plan_image
from webhook.policy.workloads import Inventory, WorkloadImage

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


def offline_verdicts(images: Sequence[str], config: Config) -> list[Verdict]:
    """Verdicts from the image strings and the configuration alone; what needs registry facts stays undecided."""
    plans = [plan_image(image, config) for image in images]
    return [verdict_of(plan) if isinstance(plan, Decision) else _undecided(plan, config) for plan in plans]


def decide_for_check(lookup: Lookup, facts: ImageFacts, config: Config) -> Decision:
    """As admission decides, except that a tag its upstream says does not exist (404) is denied, whatever
    policy.onResolveError says: that setting is about registries that cannot answer, and CI should fail
    before a Pod sits in ImagePullBackOff."""
    if facts.tag_missing and facts.digest is None and lookup.source.digest is None:
        why = facts.resolve_error or "not found"
        return Decision(Action.DENY, lookup.image, f"{lookup.source} does not exist upstream ({why})")
    return decide_image(lookup, facts, config)


def verdict_of(decision: Decision) -> Verdict:
    """The verdict for an image admission has decided."""
    return Verdict(decision.action.value, decision.reason, decision.new_image, decided=True)


def _undecided(lookup: Lookup, config: Config) -> Verdict:
    """The actions the registries' answers could lead to (`pin/rewrite`): decided once per answer the CCR could give."""
    digest = lookup.source.digest or _ANY_DIGEST
    outcomes = [decide_image(lookup, ImageFacts(digest=digest, in_ccr=held), config) for held in (False, True)]
    if not lookup.need_digest and len({(outcome.action, outcome.new_image) for outcome in outcomes}) == 1:
        return verdict_of(decide_image(lookup, ImageFacts(), config))  # the CCR's answer decides only the warm
    return Verdict(
        "/".join(dict.fromkeys(outcome.action.value for outcome in outcomes)), OFFLINE_REASON, None, decided=False
    )


def report_json(results: Sequence[tuple[WorkloadImage, Verdict]], summary: Summary) -> dict[str, object]:
    """The report for machines: one object per image (every key always present), and the summary."""
    return {"results": [{**asdict(found), **asdict(verdict)} for found, verdict in results], "summary": summary}


class Summary(TypedDict):
    """The counts of a report (`check -o json` prints them under `summary`)."""

    images: int
    workloads: int
    objects: int
    documents: int
    skipped_kinds: dict[str, int]
    actions: dict[str, int]
    denied: int
    undecided: int
    offline: bool


def summarize(inventory: Inventory, results: Sequence[tuple[WorkloadImage, Verdict]], offline: bool) -> Summary:
    """The counts CI wants at a glance: by action, and what was read and skipped."""
    return {
        "images": len(results),
        "workloads": inventory.workloads,
        "objects": inventory.objects,
        "documents": inventory.documents,
        "skipped_kinds": dict(sorted(inventory.skipped.items())),
        "actions": dict(sorted(Counter(verdict.action for _, verdict in results).items())),
        "denied": sum(verdict.action == Action.DENY.value for _, verdict in results),
        "undecided": sum(not verdict.decided for _, verdict in results),
        "offline": offline,
    }


def summary_line(summary: Summary) -> str:
    """One line: `N images in W workloads (D documents; skipped: 1 Service): 1 deny, 2 rewrite`."""
    read = _count(summary["documents"], "document")
    if summary["objects"] != summary["documents"]:
        read += f" holding {_count(summary['objects'], 'object')}"
    skipped = ", ".join(f"{count} {kind}" for kind, count in summary["skipped_kinds"].items()) or "none"
    actions = ", ".join(f"{count} {action}" for action, count in summary["actions"].items()) or "nothing to do"
    line = (
        f"{_count(summary['images'], 'image')} in {_count(summary['workloads'], 'workload')} "
        f"({read}; skipped: {skipped}): {actions}"
    )
    if summary["undecided"]:
        line += f" ({summary['undecided']} undecided: {OFFLINE_REASON})"
    return line


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


# Column headers with the widest a cell may grow (None: as wide as it needs); longer cells are cut in the middle.
# The last column is never cut: it wraps within the terminal, its continuation lines indented under it.
COLUMNS: tuple[tuple[str, int | None], ...] = (
    ("KIND", None),
    ("NAMESPACE/NAME", 28),
    ("CONTAINER", 16),
    ("IMAGE", 40),
    ("ACTION", None),
    ("RESULT/REASON", None),
)
IMAGE_COLUMN, MIN_IMAGE_WIDTH, MIN_LAST_COLUMN = 3, 32, 24


def render_table(results: Sequence[tuple[WorkloadImage, Verdict]], width: int = 120) -> str:
    """An aligned table, one row per container image, fitted to `width` columns; digests shortened as `docker` does."""
    rows = [tuple(header for header, _ in COLUMNS)] + [_cells(found, verdict) for found, verdict in results]
    natural = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    widths = [size if cap is None else min(cap, size) for size, (_, cap) in zip(natural, COLUMNS, strict=False)]
    overflow = sum(widths) + 2 * len(widths) + MIN_LAST_COLUMN - width
    widths[IMAGE_COLUMN] -= max(0, min(overflow, widths[IMAGE_COLUMN] - MIN_IMAGE_WIDTH))
    indent = sum(widths) + 2 * len(widths)
    lines = []
    for row in rows:
        left = "  ".join(_fit(cell, size).ljust(size) for cell, size in zip(row, widths, strict=False)) + "  "
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
    return cell[:head] + "..." + cell[len(cell) - (width - 3 - head) :]
