"""What the warmer knows about Pods: the images each one runs, and which Pods use each image being warmed.

The index lets the watch skip Pods whose images it has already looked at (a Pod's status changes
often, its images hardly ever) and tells the Event recorder which Pods to report a warm on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.policy.workloads import object_images


@dataclass(frozen=True, slots=True)
class PodRef:
    """One Pod, as an Event's involvedObject names it."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> PodRef:
        """The reference of a Pod given as its JSON object."""
        meta = pod.get("metadata") or {}
        return cls(meta.get("namespace") or "", meta.get("name") or "", meta.get("uid") or "")


def pod_images(pod: Mapping[str, Any]) -> frozenset[str]:
    """Every image a Pod's containers (init, regular, ephemeral) name."""
    return frozenset(object_images({"kind": "Pod", **pod}))


class PodIndex:
    """Thread-safe: each Pod's images as last looked at, and the Pods behind each warm job key."""

    def __init__(self) -> None:
        self._images: dict[PodRef, frozenset[str]] = {}
        self._keys: dict[PodRef, frozenset[str]] = {}
        self._pods: dict[str, dict[PodRef, None]] = {}  # insertion-ordered sets: the oldest Pods first
        self._lock = threading.Lock()

    def unseen_images(self, pod: PodRef, images: frozenset[str]) -> frozenset[str]:
        """The images of `pod` not looked at before."""
        with self._lock:
            return images - self._images.get(pod, frozenset())

    def record(self, pod: PodRef, images: frozenset[str], keys: Iterable[str]) -> None:
        """Remember that `pod` runs `images`, which include the warm jobs `keys` (added to what it had)."""
        with self._lock:
            self._images[pod] = images
            added = frozenset(keys) - self._keys.get(pod, frozenset())
            self._keys[pod] = self._keys.get(pod, frozenset()) | added
            for key in added:
                self._pods.setdefault(key, {})[pod] = None

    def forget(self, pod: PodRef) -> None:
        """Drop a Pod that is gone."""
        with self._lock:
            self._drop(pod)

    def retain(self, pods: Iterable[PodRef]) -> None:
        """Drop every Pod not in `pods` (after a full listing)."""
        keep = set(pods)
        with self._lock:
            for pod in [pod for pod in self._images if pod not in keep]:
                self._drop(pod)

    def pods_for(self, key: str, limit: int) -> list[PodRef]:
        """Up to `limit` Pods that use the image of warm job `key`, the longest known first."""
        with self._lock:
            return list(self._pods.get(key, {}))[:limit]

    def _drop(self, pod: PodRef) -> None:
        self._images.pop(pod, None)
        for key in self._keys.pop(pod, frozenset()):
            pods = self._pods.get(key, {})
            pods.pop(pod, None)
            if not pods:
                self._pods.pop(key, None)
