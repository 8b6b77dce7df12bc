"""Which CCR images to evict: a pure function of the inventory, what is in use, when each was last used, and the rules.

Per repository, images are ranked newest first by the `created` time of their configs (the build time),
or, when no config says, by when retention first saw them in the CCR. An image stays when it is in use
(its digest, one of its tags or one of its child manifests is named by a live workload), when it is
among the newest `keepNewest` of its repository, when it was last used less than `maxUnusedAge` ago, or
when it is a manifest of an image that stays (a platform manifest of a kept index). Any other goes: its
top manifest, then the children no kept image shares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from webhook.config import RetentionConfig
from webhook.retention.inventory import StoredImage
from webhook.retention.usage import InUse


@dataclass(frozen=True)
class Verdict:
    """What retention does with one image, and why; `delete` lists the manifests to delete, top first."""

    image: StoredImage
    evict: bool
    reason: str
    delete: tuple[str, ...] = ()
    freed_bytes: int = 0  # blob bytes no kept image shares (a blob shared by several evictions counts once)


@dataclass(frozen=True)
class Plan:
    """Every image's verdict: kept ones and evictions."""

    verdicts: tuple[Verdict, ...]

    @property
    def evictions(self) -> tuple[Verdict, ...]:
        """The verdicts that evict."""
        return tuple(verdict for verdict in self.verdicts if verdict.evict)


def plan_evictions(
    images: Sequence[StoredImage],
    in_use: InUse,
    last_used: Callable[[str, str], float],
    first_seen: Mapping[tuple[str, str], float],
    rules: RetentionConfig,
    now: float,
) -> Plan:
    """The verdict for every image; `last_used(repository, reference)` is when a workload last named it."""
    reasons: dict[tuple[str, str], str] = {}
    idle: dict[tuple[str, str], float] = {}
    for group in _by_repository(images):
        ranked = sorted(group, key=lambda image: (_built(image, first_seen, now), image.digest), reverse=True)
        for rank, image in enumerate(ranked):
            unused = now - max(
                last_used(image.repository, reference) for reference in (image.digest, *image.tags, *image.children)
            )
            if named(image, in_use):
                reasons[_key(image)] = "in use"
            elif rank < rules.keep_newest:
                reasons[_key(image)] = f"among the newest {rules.keep_newest} of its repository"
            elif unused < rules.max_unused_age_seconds:
                reasons[_key(image)] = (
                    f"unused for {format_duration(unused)}, "
                    f"less than maxUnusedAge {format_duration(rules.max_unused_age_seconds)}"
                )
            else:
                idle[_key(image)] = unused
    kept_manifests = _keep_manifests_of_kept(images, reasons)
    kept_blobs = {blob for image in images if _key(image) in reasons for blob in image.blobs}
    deleted: set[tuple[str, str]] = set()
    counted: set[str] = set()
    verdicts: list[Verdict] = []
    for image in sorted(images, key=lambda image: (image.repository, -_built(image, first_seen, now), image.digest)):
        if _key(image) in reasons:
            verdicts.append(Verdict(image, False, reasons[_key(image)]))
            continue
        delete = tuple(
            digest
            for digest in (image.digest, *image.children)
            if (image.repository, digest) not in kept_manifests | deleted
        )
        deleted.update((image.repository, digest) for digest in delete)
        freed = {
            blob: size
            for digest in delete
            for blob, size in image.manifests[digest].items()
            if blob not in kept_blobs and blob not in counted
        }
        counted.update(freed)
        verdicts.append(
            Verdict(image, True, f"unused for {format_duration(idle[_key(image)])}", delete, sum(freed.values()))
        )
    return Plan(tuple(verdicts))


def bytes_by_repository(images: Iterable[StoredImage]) -> dict[str, int]:
    """Unique blob bytes per repository of `images`."""
    blobs: dict[str, dict[str, int]] = {}
    for image in images:
        blobs.setdefault(image.repository, {}).update(image.blobs)
    return {repository: sum(sizes.values()) for repository, sizes in blobs.items()}


def format_duration(seconds: float) -> str:
    """`3d4h`, `2h5m`, `45s`: a duration as people read it, to the largest two units."""
    parts: list[str] = []
    remaining = int(max(0.0, seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size or (unit == "s" and not parts):
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts[:2])


def _key(image: StoredImage) -> tuple[str, str]:
    return image.repository, image.digest


def _by_repository(images: Iterable[StoredImage]) -> list[list[StoredImage]]:
    groups: dict[str, list[StoredImage]] = {}
    for image in images:
        groups.setdefault(image.repository, []).append(image)
    return list(groups.values())


def _built(image: StoredImage, first_seen: Mapping[tuple[str, str], float], now: float) -> float:
    """When the image was made: its configs' `created`, else when retention first saw it."""
    return image.created if image.created is not None else first_seen.get((image.repository, image.digest), now)


def named(image: StoredImage, in_use: InUse) -> bool:
    """Whether a live workload names the image, one of its tags, or one of its child manifests."""
    return in_use.names(image.repository, image.digest, image.tags) or any(
        (image.repository, child) in in_use.digests for child in image.children
    )


def _keep_manifests_of_kept(images: Sequence[StoredImage], reasons: dict[tuple[str, str], str]) -> set[tuple[str, str]]:
    """Every manifest of a kept image; an image that is one of those is kept too (added to `reasons`)."""
    kept = {(image.repository, digest) for image in images if _key(image) in reasons for digest in image.manifests}
    changed = True
    while changed:
        changed = False
        for image in images:
            if _key(image) not in reasons and _key(image) in kept:
                reasons[_key(image)] = "a manifest of an image that stays"
                kept.update((image.repository, digest) for digest in image.manifests)
                changed = True
    return kept
