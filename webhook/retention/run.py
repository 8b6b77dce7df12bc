"""One retention run: read the CCR, plan evictions, confirm usage, delete manifests through the registry API.

Between planning and deleting, usage is confirmed from the API server (a fresh list), and right before
each DELETE it is checked again against the live usage tracker, so a Pod created during the run keeps
its image. A manifest DELETE removes the manifest and every tag on it; the blobs stay on disk until the
registry's own garbage collection runs (docs/operations.md, "Retention"). An image's attachments
(signatures, referrers) are deleted right after it; orphan attachments last, each only while its subject is
still absent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from webhook.config import Config
from webhook.registry.errors import NotFound, RegistryError
from webhook.retention.inventory import Attachment, BuildTimes, CCRReader, StoredImage, read_inventory
from webhook.retention.metrics import RetentionMetrics
from webhook.retention.plan import Plan, Verdict, bytes_by_repository, named, plan_evictions, unique_bytes
from webhook.retention.usage import InUse, UsageTracker

log = logging.getLogger(__name__)


class CCRWriter(CCRReader, Protocol):
    """What a retention run asks of the CCR's registry client: the inventory's reads, and manifest deletes."""

    def delete_manifest(self, repository: str, digest: str) -> None: ...


Planned = TypeVar("Planned", Verdict, Attachment)


@dataclass(frozen=True)
class Outcome(Generic[Planned]):
    """What happened to one planned delete, an eviction or an orphan attachment: the manifests deleted, and why it
    stopped short if it did."""

    planned: Planned
    deleted: tuple[str, ...]
    spared: str | None = None  # it turned out to be in use (an orphan: its subject is back): kept
    error: str | None = None  # a delete failed


@dataclass(frozen=True)
class RunResult:
    """A retention run: the plan, and (unless a dry run) what each eviction and orphan delete did."""

    plan: Plan
    outcomes: tuple[Outcome[Verdict], ...]
    dry_run: bool
    orphan_outcomes: tuple[Outcome[Attachment], ...] = ()

    @property
    def failed(self) -> bool:
        """Whether some delete failed."""
        return any(o.error for o in self.outcomes) or any(o.error for o in self.orphan_outcomes)


class Retention:
    """Runs retention against one CCR with live usage; remembers when it first saw each image, for ranking, and
    the build time of each config it read."""

    def __init__(
        self,
        config: Config,
        ccr: CCRWriter,
        tracker: UsageTracker,
        confirm: Callable[[], InUse],
        *,
        metrics: RetentionMetrics | None = None,
        on_evicted: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._ccr = ccr
        self._tracker = tracker
        self._confirm = confirm
        self._metrics = metrics
        self._on_evicted = on_evicted or (lambda repository, digest: None)
        self._clock = clock
        self._first_seen: dict[tuple[str, str], float] = {}
        self._build_times = BuildTimes()

    def run(self, *, dry_run: bool | None = None, max_unused_age: float | None = None) -> RunResult:
        """Plan and evict (unless `dry_run`, default retention.dryRun); `max_unused_age` overrides the age."""
        rules = self._config.retention
        if max_unused_age is not None:  # for every rule: each one's own age gives way to it
            rules = dataclasses.replace(
                rules,
                max_unused_age_seconds=max_unused_age,
                rules=tuple(dataclasses.replace(rule, max_unused_age_seconds=None) for rule in rules.rules),
            )
        dry_run = rules.dry_run if dry_run is None else dry_run
        prefixes = [upstream.prefix for upstream in self._config.upstreams]
        inventory = read_inventory(self._ccr, prefixes, self._tracker.seen_digests(), self._build_times)
        images = inventory.images
        now = self._clock()
        self._first_seen = {
            (image.repository, image.digest): self._first_seen.get((image.repository, image.digest), now)
            for image in images
        }
        in_use = self._tracker.in_use()
        plan = plan_evictions(images, in_use, self._tracker.last_seen, self._first_seen, rules, now, inventory.orphans)
        outcomes: tuple[Outcome[Verdict], ...] = ()
        orphan_outcomes: tuple[Outcome[Attachment], ...] = ()
        if not dry_run and plan.evictions:
            confirmed = self._confirm()
            outcomes = tuple(self._evict(verdict, confirmed) for verdict in plan.evictions)
        if not dry_run:
            orphan_outcomes = tuple(self._delete_orphan(orphan) for orphan in plan.orphans)
        gone = {(o.planned.image.repository, o.planned.image.digest) for o in outcomes if o.deleted and not o.error}
        orphans_gone = {o.planned.digest for o in orphan_outcomes if not (o.error or o.spared)}
        remaining: list[StoredImage | Attachment] = [
            *(v.image for v in plan.verdicts if (v.image.repository, v.image.digest) not in gone),
            *(orphan for orphan in plan.orphans if orphan.digest not in orphans_gone),
        ]
        if plan.over_budget:
            log.warning(
                "retention: %d bytes stay, over retention.maxBytes %d: the rest is in use or kept by a pattern",
                plan.kept_bytes,
                plan.max_bytes,
            )
        if self._metrics is not None:
            self._metrics.set_holdings(bytes_by_repository(remaining), len(in_use.digests))
            self._metrics.set_storage(unique_bytes(remaining), rules.max_bytes)
        return RunResult(plan, outcomes, dry_run, orphan_outcomes)

    def _evict(self, verdict: Verdict, confirmed: InUse) -> Outcome[Verdict]:
        """Delete the manifests of one eviction, top first, each only if still unused right before its DELETE."""
        image = verdict.image
        deleted: list[str] = []
        for digest in verdict.delete:
            live = self._tracker.in_use()
            if digest == image.digest and (named(image, confirmed) or named(image, live)):
                return Outcome(verdict, (), spared="in use since planning")
            if (image.repository, digest) in confirmed.digests | live.digests:
                continue
            try:
                self._ccr.delete_manifest(image.repository, digest)
            except NotFound:
                pass  # gone already: the goal is reached
            except RegistryError as err:
                log.warning("retention: deleting %s@%s failed: %s", image.repository, digest, err)
                return Outcome(verdict, tuple(deleted), error=str(err))
            deleted.append(digest)
            self._tracker.forget(image.repository, digest)
            self._on_evicted(image.repository, digest)
        if self._metrics is not None:
            self._metrics.count_eviction(verdict.freed_bytes)
        log.info(
            "retention: evicted %s@%s (%s), %d bytes to free",
            image.repository,
            image.digest,
            verdict.reason,
            verdict.freed_bytes,
        )
        return Outcome(verdict, tuple(deleted))

    def _delete_orphan(self, orphan: Attachment) -> Outcome[Attachment]:
        """Delete an attachment whose subject is gone, top manifest first, unless its subject came back meanwhile
        (a copy brings the image before its signatures)."""
        deleted: list[str] = []
        for digest in orphan.manifests:
            if self._ccr.has_manifest(orphan.repository, orphan.subject):
                return Outcome(orphan, tuple(deleted), spared=f"its subject {orphan.subject} is back")
            try:
                self._ccr.delete_manifest(orphan.repository, digest)
            except NotFound:
                pass  # gone already
            except RegistryError as err:
                log.warning("retention: deleting orphan %s@%s failed: %s", orphan.repository, digest, err)
                return Outcome(orphan, tuple(deleted), error=str(err))
            deleted.append(digest)
        log.info(
            "retention: deleted the orphan %s %s@%s (its subject %s is gone)",
            orphan.kind.noun,
            orphan.repository,
            orphan.digest,
            orphan.subject,
        )
        return Outcome(orphan, tuple(deleted))
