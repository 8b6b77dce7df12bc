"""Which CCR images to evict: a pure function of the inventory, what is in use, when each was last used, and the rules.

Each repository follows the first of `retention.rules` covering it, else the default rule (`keepNewest`,
`maxUnusedAge`; webhook.retention.rules). An image stays when it is in use (its digest, one of its tags or
one of its child manifests is named by a live workload), when one of its tags matches a `keep` pattern of
its rule, when it is among the newest `keepNewest` of its repository (by build time or semantic version,
as its rule ranks), when it was last used less than `maxUnusedAge` ago, or when it is a manifest of an
image that stays (a platform manifest of a kept index). Any other goes: its top manifest, then the
children no kept image shares, then its attachments (signatures, referrers) whose subject no kept image
holds. Attachments are never images here: not ranked, not counted toward `keepNewest`; their bytes count
with their image's. An orphan attachment (its subject no longer in the CCR) goes.

With a storage budget (`maxBytes`), when the unique blob bytes of the images that stay exceed it, the ones
kept only by `keepNewest` or `maxUnusedAge` go too, least recently used first, until the rest fits. An
image in use or kept by a `keep` pattern never goes for the budget; if those alone exceed it, the plan
says so (`over_budget`) and the metrics show it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from webhook.config import RetentionConfig
from webhook.policy.signatures import Attached
from webhook.retention.inventory import Attachment, StoredImage
from webhook.retention.rules import RuleBook
from webhook.retention.usage import InUse

ImageKey = tuple[str, str]  # (repository, top manifest digest)


@dataclass(frozen=True)
class Verdict:
    """What retention does with one image, and why; `delete` lists the manifests to delete, top first, then those
    of the attachments going with it (`attachments_going`)."""

    image: StoredImage
    evict: bool
    reason: str
    delete: tuple[str, ...] = ()
    freed_bytes: int = 0  # blob bytes no kept image shares (a blob shared by several evictions counts once)
    attachments_going: tuple[Attachment, ...] = ()

    @property
    def attachments_staying(self) -> tuple[Attachment, ...]:
        """Its attachments that stay: all of a kept image's, and those of an evicted one whose subject a kept
        image shares."""
        return tuple(attachment for attachment in self.image.attachments if attachment not in self.attachments_going)


@dataclass(frozen=True)
class Plan:
    """Every image's verdict, the orphan attachments to delete, and the CCR's bytes before and after against the
    budget."""

    verdicts: tuple[Verdict, ...]
    stored_bytes: int = 0  # unique blob bytes of every image (and attachment) read
    kept_bytes: int = 0  # unique blob bytes of the images that stay, with their attachments
    max_bytes: int | None = None  # the budget, if one is set
    orphans: tuple[Attachment, ...] = ()  # attachments whose subject the CCR no longer holds: all go
    orphan_bytes: int = 0  # their blob bytes no kept image shares

    @property
    def evictions(self) -> tuple[Verdict, ...]:
        """The verdicts that evict."""
        return tuple(verdict for verdict in self.verdicts if verdict.evict)

    @property
    def over_budget(self) -> bool:
        """Whether what stays still exceeds the budget (everything else is in use or kept by a pattern)."""
        return self.max_bytes is not None and self.kept_bytes > self.max_bytes


def plan_evictions(
    images: Sequence[StoredImage],
    in_use: InUse,
    last_used: Callable[[str, str], float],
    first_seen: Mapping[ImageKey, float],
    rules: RetentionConfig,
    now: float,
    orphans: Sequence[Attachment] = (),
) -> Plan:
    """The verdict for every image, and `orphans` to delete; `last_used(repository, reference)` is when a workload
    last named it."""
    book = RuleBook(rules)
    reasons: dict[ImageKey, str] = {}
    yielding: dict[ImageKey, tuple[float, float]] = {}  # kept by keepNewest or maxUnusedAge only: last used, built
    evicting: dict[ImageKey, str] = {}
    for group in _by_repository(images):
        rule = book.for_repository(group[0].repository)
        ranked = sorted(
            group,
            key=lambda image: rule.rank_key(image.tags, _built(image, first_seen, now), image.digest),
            reverse=True,
        )
        age = format_duration(rule.max_unused_age_seconds)
        for rank, image in enumerate(ranked):
            last = max(
                last_used(image.repository, reference) for reference in (image.digest, *image.tags, *image.children)
            )
            unused = format_duration(now - last)
            kept_tag = rule.kept_tag(image.tags)
            if named(image, in_use):
                reasons[_key(image)] = "in use"
            elif kept_tag is not None:
                reasons[_key(image)] = f"{rule.label} keeps tags matching {kept_tag[1]} ({kept_tag[0]})"
            elif rank < rule.keep_newest:
                reasons[_key(image)] = f"{rule.label}: among the newest {rule.keep_newest} by {rule.ranking}"
                yielding[_key(image)] = last, _built(image, first_seen, now)
            elif now - last < rule.max_unused_age_seconds:
                reasons[_key(image)] = f"{rule.label}: unused for {unused}, within maxUnusedAge {age}"
                yielding[_key(image)] = last, _built(image, first_seen, now)
            else:
                evicting[_key(image)] = f"{rule.label}: unused for {unused}, past maxUnusedAge {age}"
    _keep_manifests_of_kept(images, reasons)
    if rules.max_bytes is not None:
        evicting.update(_over_budget(images, reasons, yielding, rules.max_bytes, now))
    kept_manifests = _keep_manifests_of_kept(images, reasons)
    kept_blobs = {blob for image in images if _key(image) in reasons for blob in image.blobs}
    deleted: set[ImageKey] = set()
    counted: set[str] = set()

    def _freed(manifests: Iterable[Mapping[str, int]]) -> dict[str, int]:
        """The blobs of `manifests` no kept image holds and no eviction before counted, with their sizes."""
        freed = {
            blob: size
            for blobs in manifests
            for blob, size in blobs.items()
            if blob not in kept_blobs and blob not in counted
        }
        counted.update(freed)
        return freed

    verdicts: list[Verdict] = []
    for image in sorted(images, key=lambda image: (image.repository, -_built(image, first_seen, now), image.digest)):
        if _key(image) in reasons:
            verdicts.append(Verdict(image, False, reasons[_key(image)]))
            continue
        going = tuple(a for a in image.attachments if (image.repository, a.subject) not in kept_manifests)
        delete = tuple(
            digest
            for digest in (image.digest, *image.children, *(digest for a in going for digest in a.manifests))
            if (image.repository, digest) not in kept_manifests | deleted
        )
        deleted.update((image.repository, digest) for digest in delete)
        manifests = {**image.manifests, **image.attached_manifests}
        freed = _freed(manifests[digest] for digest in delete)
        verdicts.append(Verdict(image, True, evicting[_key(image)], delete, sum(freed.values()), going))
    kept = [image for image in images if _key(image) in reasons]
    orphan_blobs = _freed(blobs for orphan in orphans for blobs in orphan.manifests.values())
    return Plan(
        tuple(verdicts),
        unique_bytes([*images, *orphans]),
        unique_bytes(kept),
        rules.max_bytes,
        tuple(orphans),
        sum(orphan_blobs.values()),
    )


def _over_budget(
    images: Sequence[StoredImage],
    reasons: dict[ImageKey, str],
    yielding: Mapping[ImageKey, tuple[float, float]],
    max_bytes: int,
    now: float,
) -> dict[ImageKey, str]:
    """Take images kept only by keepNewest or maxUnusedAge out of `reasons`, least recently used first (the oldest
    build first among those last used at once), until the unique blob bytes of those left fit `max_bytes`; the
    reasons of the ones taken."""
    references: Counter[str] = Counter()  # how many kept images hold each blob
    sizes: dict[str, int] = {}
    for image in images:
        if _key(image) in reasons:
            references.update(image.blobs.keys())
            sizes.update(image.blobs)
    kept = sum(sizes[blob] for blob in references)
    taken: dict[ImageKey, str] = {}
    candidates = sorted(
        (image for image in images if _key(image) in yielding and _key(image) in reasons),
        key=lambda image: (yielding[_key(image)], image.repository, image.digest),
    )
    for image in candidates:
        if kept <= max_bytes:
            break
        references.subtract(image.blobs.keys())
        for blob in image.blobs:
            if references[blob] == 0:
                kept -= sizes[blob]
                del references[blob]
        taken[_key(image)] = (
            f"over the storage budget of {format_bytes(max_bytes)}, least recently used first: "
            f"last used {format_duration(now - yielding[_key(image)][0])} ago ({reasons.pop(_key(image))})"
        )
    return taken


def unique_bytes(images: Iterable[StoredImage | Attachment]) -> int:
    """The bytes of every distinct blob of `images` (with their attachments): what they hold, each blob once."""
    sizes: dict[str, int] = {}
    for image in images:
        sizes.update(image.blobs)
    return sum(sizes.values())


def bytes_by_repository(images: Iterable[StoredImage | Attachment]) -> dict[str, int]:
    """Unique blob bytes per repository of `images`."""
    blobs: dict[str, dict[str, int]] = {}
    for image in images:
        blobs.setdefault(image.repository, {}).update(image.blobs)
    return {repository: sum(sizes.values()) for repository, sizes in blobs.items()}


def format_attachments(attachments: Sequence[Attachment]) -> str:
    """`its signature and 2 referrers`: what is attached to an image, in words ("" when nothing is)."""
    counts = Counter(attachment.kind for attachment in attachments)
    counts[Attached.REFERRERS] = sum(attachment.referrers for attachment in attachments)
    parts = [
        f"its {kind.noun}" if counts[kind] == 1 else f"{counts[kind]} {kind.noun}s"
        for kind in (Attached.SIGNATURE, Attached.ATTESTATION, Attached.SBOM)
        if counts[kind]
    ]
    referrers = counts[Attached.REFERRERS]
    if referrers:
        parts.append(f"{referrers} referrer{'s' if referrers > 1 else ''}")
    return f"{', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1 else "".join(parts)


def format_duration(seconds: float) -> str:
    """`3d4h`, `2h5m`, `45s`: a duration as people read it, to the largest two units."""
    parts: list[str] = []
    remaining = int(max(0.0, seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size or (unit == "s" and not parts):
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts[:2])


def format_bytes(size: int) -> str:
    """`512 B`, `31.4 KiB`, `1.2 GiB`."""
    if size < 1024:
        return f"{size} B"
    units = ("KiB", "MiB", "GiB", "TiB")
    value, index = size / 1024, 0
    while value >= 1024 and index < len(units) - 1:
        value, index = value / 1024, index + 1
    return f"{value:.1f} {units[index]}"


def _key(image: StoredImage) -> ImageKey:
    return image.repository, image.digest


def _by_repository(images: Iterable[StoredImage]) -> list[list[StoredImage]]:
    groups: dict[str, list[StoredImage]] = {}
    for image in images:
        groups.setdefault(image.repository, []).append(image)
    return list(groups.values())


def _built(image: StoredImage, first_seen: Mapping[ImageKey, float], now: float) -> float:
    """When the image was made: its configs' `created`, else when retention first saw it."""
    return image.created if image.created is not None else first_seen.get((image.repository, image.digest), now)


def named(image: StoredImage, in_use: InUse) -> bool:
    """Whether a live workload names the image, one of its tags, or one of its child manifests."""
    return in_use.names(image.repository, image.digest, image.tags) or any(
        (image.repository, child) in in_use.digests for child in image.children
    )


def _keep_manifests_of_kept(images: Sequence[StoredImage], reasons: dict[ImageKey, str]) -> set[ImageKey]:
    """Every manifest of a kept image; an image that is one of those is kept too (added to `reasons`)."""
    kept = {
        (image.repository, digest)
        for image in images
        if _key(image) in reasons
        for digest in (*image.manifests, *image.attached_manifests)
    }
    changed = True
    while changed:
        changed = False
        for image in images:
            if _key(image) not in reasons and _key(image) in kept:
                reasons[_key(image)] = "a manifest of an image that stays"
                kept.update((image.repository, digest) for digest in image.manifests)
                changed = True
    return kept
