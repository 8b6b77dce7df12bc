"""`ccr-webhook gc`: run retention once, on demand: evict from the CCR the images no workload uses.

Usage comes from the cluster (the service account in a Pod, else the kubeconfig), the CCR from the
configuration. This process has just started, so it counts every image unused now as last used now:
with the configured maxUnusedAge nothing is old enough yet. Pass `--max-unused-age 0` to evict every
image unused right now (for every rule: tags a rule keeps and the newest keepNewest of each repository
still stay), or let the warmer's scheduled run, which has watched the cluster for longer, do it. Every
image is printed with the rule that keeps or evicts it, and why, and the attachments (cosign signatures,
referrers) that stay or go with it; then the orphan attachments, whose image is gone, which go.

Exit codes: 0 done (or nothing to do), 1 a delete failed or the CCR or cluster could not be read,
2 unreadable configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes.client.exceptions import ApiException

from webhook.commands import add_config_argument, configuration, registries_of
from webhook.config import parse_duration
from webhook.kube.client import kubernetes_client
from webhook.registry.errors import RegistryError
from webhook.retention.plan import Verdict, format_attachments, format_bytes, unique_bytes

if TYPE_CHECKING:  # imported in run(): retention.run brings prometheus_client, which must not be loaded before
    # `serve` has set PROMETHEUS_MULTIPROC_DIR, and every command module is imported to build the CLI
    from webhook.retention.inventory import Attachment
    from webhook.retention.run import Outcome, RunResult


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `gc`."""
    parser = subparsers.add_parser(
        "gc",
        help="evict images no workload uses from the CCR (retention, once)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    parser.add_argument(
        "--max-unused-age",
        type=_duration,
        metavar="DURATION",
        help="override retention.maxUnusedAge and every rule's (seconds, or 90s, 30m, 168h, 7d); "
        "0: unused now is enough",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, then $KUBECONFIG)")
    parser.add_argument(
        "--sync-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long listing the cluster may take (default: 60)",
    )
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format (default: table)"
    )
    parser.set_defaults(func=run)


def _duration(text: str) -> float:
    """Seconds from a number or a duration string, for argparse."""
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be seconds or a duration such as 30m, 168h or 7d, got {text!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Watch the cluster's usage, run retention once, print the evictions."""
    from webhook.retention.run import Retention
    from webhook.retention.watch import ClusterUsage

    config = configuration(args)
    registries = registries_of(config)
    usage = ClusterUsage(kubernetes_client(args.kubeconfig), config)
    try:
        usage.start()
        if not usage.wait_synced(args.sync_timeout):
            print(
                f"ccr-webhook gc: could not list the cluster's workloads within {args.sync_timeout:g} s",
                file=sys.stderr,
            )
            return 1
        retention = Retention(config, registries.ccr, usage.tracker, usage.confirm)
        result = retention.run(dry_run=args.dry_run or None, max_unused_age=args.max_unused_age)
    except (RegistryError, ApiException, urllib3.exceptions.HTTPError) as err:
        print(f"ccr-webhook gc: {str(err).strip()}", file=sys.stderr)
        return 1
    finally:
        usage.stop()
        registries.close()
    print(json.dumps(report_json(result), indent=2) if args.output == "json" else render(result))
    return 1 if result.failed else 0


def render(result: RunResult) -> str:
    """One line per image: kept (and by which rule), or what its eviction would do, did, or why it stopped, with
    the attachments that go or stay with it; one per orphan attachment; then a summary with the CCR's bytes
    against the budget."""
    outcomes = {(o.planned.image.repository, o.planned.image.digest): o for o in result.outcomes}
    lines = []
    for verdict in result.plan.verdicts:
        image = verdict.image
        outcome = outcomes.get((image.repository, image.digest))
        why = (outcome and (outcome.error or outcome.spared)) or verdict.reason
        state = _state(outcome, result.dry_run) if verdict.evict else "kept"
        size = verdict.freed_bytes if verdict.evict else unique_bytes([image])
        lines.append(
            f"{state:<13} {image.repository}@{image.digest[:19]} "
            f"{','.join(image.tags) or '-'} {format_bytes(size)}{_with(verdict)} ({why})"
        )
    orphans = {o.planned.digest: o for o in result.orphan_outcomes}
    for orphan in result.plan.orphans:
        done = orphans.get(orphan.digest)
        why = (done and (done.error or done.spared)) or _orphaned(orphan)
        lines.append(
            f"{_state(done, result.dry_run):<13} {orphan.repository}@{orphan.digest[:19]} "
            f"{','.join(orphan.tags)} ({why})"
        )
    kept = len(result.plan.verdicts) - len(result.plan.evictions)
    evicted = [o for o in result.outcomes if o.deleted and not o.error]
    gone = (
        len(result.plan.orphans)
        if result.dry_run
        else sum(1 for o in result.orphan_outcomes if o.deleted and not (o.error or o.spared))
    )
    freed = (
        sum(o.planned.freed_bytes for o in evicted)
        if not result.dry_run
        else sum(v.freed_bytes for v in result.plan.evictions)
    ) + (result.plan.orphan_bytes if gone == len(result.plan.orphans) else 0)
    verb = "would evict" if result.dry_run else "evicted"
    count = len(result.plan.evictions) if result.dry_run else len(evicted)
    orphaned = f" and {gone} orphan attachment(s)" if gone else ""
    lines.append(
        f"{verb} {count} image(s){orphaned}, {format_bytes(freed)} to be freed by the registry's garbage collection; "
        f"kept {kept}"
    )
    plan = result.plan
    if plan.max_bytes is not None:
        lines.append(
            f"storage: {format_bytes(plan.stored_bytes)} before, {format_bytes(plan.kept_bytes)} after, "
            f"budget {format_bytes(plan.max_bytes)}"
            + (" (still over: the rest is in use or kept by a pattern)" if plan.over_budget else "")
        )
    return "\n".join(lines)


def report_json(result: RunResult) -> dict[str, Any]:
    """The run as data: every verdict with its attachments, the orphan attachments, and what happened to each."""
    outcomes = {(o.planned.image.repository, o.planned.image.digest): o for o in result.outcomes}
    orphans = {o.planned.digest: o for o in result.orphan_outcomes}
    return {
        "dryRun": result.dry_run,
        "storedBytes": result.plan.stored_bytes,
        "keptBytes": result.plan.kept_bytes,
        "maxBytes": result.plan.max_bytes,
        "images": [
            {
                "repository": v.image.repository,
                "digest": v.image.digest,
                "tags": list(v.image.tags),
                "evict": v.evict,
                "reason": v.reason,
                "freedBytes": v.freed_bytes,
                "state": _state(outcomes.get((v.image.repository, v.image.digest)), result.dry_run)
                if v.evict
                else "kept",
                "attachments": [
                    {**_attachment_json(a), "evict": a in v.attachments_going} for a in v.image.attachments
                ],
            }
            for v in result.plan.verdicts
        ],
        "orphans": [
            {**_attachment_json(a), "state": _state(orphans.get(a.digest), result.dry_run)} for a in result.plan.orphans
        ],
    }


def _attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "repository": attachment.repository,
        "digest": attachment.digest,
        "tags": list(attachment.tags),
        "kind": attachment.kind.noun,
        "subject": attachment.subject,
        "referrers": attachment.referrers,
    }


def _with(verdict: Verdict) -> str:
    """` with its signature and 2 referrers`: the attachments going with an evicted image (and any staying), or
    staying with a kept one."""
    if not verdict.evict:
        staying = format_attachments(verdict.image.attachments)
        return f" with {staying}" if staying else ""
    going, staying = format_attachments(verdict.attachments_going), format_attachments(verdict.attachments_staying)
    return (f" with {going}" if going else "") + (f", leaving {staying} (its subject stays)" if staying else "")


def _orphaned(orphan: Attachment) -> str:
    """Why an orphan attachment goes, in words."""
    listed = f", listing {format_attachments([orphan])}" if orphan.referrers else ""
    return f"an orphan: the {orphan.kind.noun} of {orphan.subject[:19]}, which the CCR no longer holds{listed}"


def _state(outcome: Outcome[Any] | None, dry_run: bool) -> str:
    if dry_run or outcome is None:
        return "would delete"
    if outcome.error:
        return "failed"
    return "spared" if outcome.spared else "deleted"
