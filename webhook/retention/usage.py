"""Which CCR images the cluster uses, and when each was last used: a pure core fed by list and watch events.

Usage is derived from the cluster alone and rebuilt on every start, so there is no database to lose.
An image is *used* while a live object names it: a Pod (its containers, and the digests its container
statuses report running), or the pod template of a Deployment, StatefulSet, DaemonSet, ReplicaSet,
Job or CronJob (a Deployment scaled to 0, or an old ReplicaSet kept for rollback, still needs its
image). A CCR name counts in every namespace (that Pod pulls from the CCR whatever its namespace says);
an upstream name counts only in namespaces opted in with the label `ccr-webhook/policy`, where the
webhook rewrites it to the CCR. Pinned names use a digest; a tag-only name uses whatever digest the
CCR's tag points at when retention asks.

"Last used" is the last moment a live object named the image. What this process never saw named, it
treats as used at the moment it started: after a restart nothing is older than the process, so a
restart can delay an eviction by up to `retention.maxUnusedAge` but never hasten one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.config import Config
from webhook.policy.reference import InvalidImageReference, is_digest, parse_image
from webhook.policy.workloads import object_images

OPT_IN_LABEL = "ccr-webhook/policy"
WORKLOAD_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
_STATUS_LISTS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")


@dataclass(frozen=True, slots=True)
class ImageUse:
    """One CCR image a workload names: its CCR repository and a digest or tag; `upstream_name` if named upstream."""

    repository: str
    reference: str
    upstream_name: bool


@dataclass(frozen=True, slots=True)
class InUse:
    """The CCR images live workloads name right now, as (repository, digest) and (repository, tag) pairs."""

    digests: frozenset[tuple[str, str]]
    tags: frozenset[tuple[str, str]]

    def names(self, repository: str, digest: str, tags: Iterable[str] = ()) -> bool:
        """Whether `repository@digest`, or one of the tags that point at it, is named by a live workload."""
        return (repository, digest) in self.digests or any((repository, tag) in self.tags for tag in tags)


def ccr_use(image: str, config: Config) -> ImageUse | None:
    """The CCR image `image` names (a CCR name, or an upstream one mapped under its prefix), or None."""
    try:
        ref = parse_image(image)
    except InvalidImageReference:
        return None
    reference = ref.digest or ref.tag or "latest"
    if ref.registry == config.ccr.registry:
        return ImageUse(ref.repository, reference, upstream_name=False)
    upstream = config.upstream_for(ref.registry)
    if upstream is None:
        return None
    return ImageUse(ref.with_registry(config.ccr.registry, upstream.prefix).repository, reference, upstream_name=True)


def uses_of(obj: Mapping[str, Any], config: Config) -> frozenset[ImageUse]:
    """Every CCR image a Pod or workload object names, including the digests a Pod's containers report running."""
    images = object_images(obj)
    status = obj.get("status") if obj.get("kind") == "Pod" else None
    for list_name in _STATUS_LISTS:
        for entry in (status or {}).get(list_name) or []:
            image_id = str(entry.get("imageID") or "").split("://")[-1]
            if "@" in image_id:
                images.append(image_id)
    return frozenset(use for use in (ccr_use(image, config) for image in images) if use is not None)


ObjectKey = tuple[str, str, str]  # (kind, namespace, name)


class UsageTracker:
    """The CCR images live objects name and when each was last named; thread-safe, fed by `replace` and `apply`."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._objects: dict[ObjectKey, frozenset[ImageUse]] = {}
        self._opted_in: set[str] = set()
        self._last_seen: dict[tuple[str, str], float] = {}

    def replace(self, kind: str, objects: Iterable[Mapping[str, Any]]) -> None:
        """Take a fresh list of every object of `kind` (a Namespace list sets the opted-in namespaces)."""
        objects = list(objects)
        with self._lock:
            if kind == "Namespace":
                self._set_namespaces({_name(obj) for obj in objects if _opted_in(obj)})
                return
            fresh = {_key(kind, obj): uses_of(obj, self._config) for obj in objects}
            for key in [key for key in self._objects if key[0] == kind]:
                self._retire(key, fresh.get(key, frozenset()))
                del self._objects[key]
            self._objects.update((key, uses) for key, uses in fresh.items() if uses)

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED or DELETED) for a Namespace, a Pod or a workload."""
        kind = str(obj.get("kind"))
        with self._lock:
            if kind == "Namespace":
                wanted = _opted_in(obj) and event_type != "DELETED"
                self._set_namespaces(self._opted_in | {_name(obj)} if wanted else self._opted_in - {_name(obj)})
                return
            key = _key(kind, obj)
            uses = frozenset() if event_type == "DELETED" else uses_of(obj, self._config)
            self._retire(key, uses)
            if uses:
                self._objects[key] = uses
            else:
                self._objects.pop(key, None)

    def in_use(self) -> InUse:
        """What live workloads name now; marks each as seen now."""
        now = self._clock()
        with self._lock:
            named = {
                (use.repository, use.reference)
                for key, uses in self._objects.items()
                for use in uses
                if self._counts(key, use)
            }
            for pair in named:
                self._last_seen[pair] = now
        digests = frozenset(pair for pair in named if is_digest(pair[1]))
        return InUse(digests=digests, tags=frozenset(named - digests))

    def last_seen(self, repository: str, reference: str) -> float:
        """When `repository` at `reference` was last named, as of the last in_use() (else this process's start)."""
        with self._lock:
            return self._last_seen.get((repository, reference), self.started)

    def seen_digests(self) -> set[tuple[str, str]]:
        """Every (repository, digest) seen named since start: how retention finds untagged images in the CCR."""
        with self._lock:
            named = {(use.repository, use.reference) for uses in self._objects.values() for use in uses}
            return {pair for pair in named | set(self._last_seen) if is_digest(pair[1])}

    def forget(self, repository: str, digest: str) -> None:
        """Drop what is remembered of an evicted image."""
        with self._lock:
            self._last_seen.pop((repository, digest), None)

    def _counts(self, key: ObjectKey, use: ImageUse) -> bool:
        """A CCR name counts everywhere; an upstream name only where the webhook rewrites it to the CCR."""
        return not use.upstream_name or key[1] in self._opted_in

    def _retire(self, key: ObjectKey, keeping: frozenset[ImageUse]) -> None:
        """Stamp the uses `key` stops naming as seen now (called with the lock held)."""
        now = self._clock()
        for use in self._objects.get(key, frozenset()) - keeping:
            if self._counts(key, use):
                self._last_seen[(use.repository, use.reference)] = now

    def _set_namespaces(self, opted_in: set[str]) -> None:
        """Change the opted-in namespaces, stamping the upstream names that stop counting (lock held)."""
        now = self._clock()
        for key, uses in self._objects.items():
            if key[1] in self._opted_in and key[1] not in opted_in:
                for use in uses:
                    if use.upstream_name:
                        self._last_seen[(use.repository, use.reference)] = now
        self._opted_in = opted_in


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _opted_in(obj: Mapping[str, Any]) -> bool:
    return OPT_IN_LABEL in ((obj.get("metadata") or {}).get("labels") or {})


def _key(kind: str, obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    return (kind, str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
