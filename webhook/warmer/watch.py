"""The warmer's view of the cluster: the Pods of the namespaces the webhook acts on, and nothing else.

An informer over the namespaces whose ccr-webhook label is one of the warmed values (`enforce`, and
`dry-run` with warmDryRunNamespaces) keeps the set of watched namespaces: the API server filters by the
label selector, and a namespace that loses its label leaves as DELETED. The Pods come from the
process's one Pod informer (shared with retention), kept to the watched namespaces, so a Pod anywhere
else never makes the warmer resolve or copy anything. A namespace labelled later has its Pods listed at once.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable

from kubernetes.client import CoreV1Api

from webhook.kube.informer import Informer, Obj

log = logging.getLogger("webhook.warmer.watch")


class PodWatch:
    """Hands `on_pods(pods, complete)` every Pod of a namespace whose `label` is one of `values`.

    `complete` is True for a full listing (every watched Pod there is); `on_deleted(pod)` hears deletions.
    `pods` is the process's shared Pod informer: this watch adds itself as a handler and removes itself on stop().
    """

    def __init__(
        self,
        core: CoreV1Api,
        pods: Informer,
        *,
        label: str,
        values: Iterable[str],
        on_pods: Callable[[list[Obj], bool], None],
        on_deleted: Callable[[Obj], None],
        resync_seconds: float = 600.0,
        watch_seconds: float = 300.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self._core, self._pods = core, pods
        self._on_pods, self._on_deleted = on_pods, on_deleted
        self._namespace_informer = Informer(
            core.list_namespace,
            kind="Namespace",
            api_version="v1",
            label_selector=f"{label} in ({','.join(sorted(values))})",
            resync_seconds=resync_seconds,
            watch_seconds=watch_seconds,
            retry_seconds=retry_seconds,
        )
        self._namespaces: set[str] | None = None  # None until the first listing of namespaces
        self._lock = threading.Lock()
        self._pod_handler = _WatchedPods(self.watches, on_pods, on_deleted)

    def start(self) -> PodWatch:
        """Follow the labelled namespaces; the Pods follow once those are known."""
        self._namespace_informer.add_handler(self)
        self._namespace_informer.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following namespaces and Pods (the shared Pod informer keeps running for its other handlers)."""
        self._pods.remove_handler(self._pod_handler)
        self._namespace_informer.stop(timeout)

    @property
    def alive(self) -> bool:
        """Whether the namespace and Pod informers run."""
        return self._namespace_informer.alive and self._pods.alive

    def watches(self, pod: Obj) -> bool:
        """Whether `pod` lives in a watched namespace."""
        with self._lock:
            return self._namespaces is not None and (pod.get("metadata") or {}).get("namespace") in self._namespaces

    # -- the namespace informer's handler ------------------------------------------------------------

    def listed(self, objects: list[Obj]) -> None:
        """A full listing of the labelled namespaces: the first one lets the Pods in, later ones list what joined."""
        names = {_name(namespace) for namespace in objects}
        with self._lock:
            first, added = self._namespaces is None, names - (self._namespaces or set())
            self._namespaces = names
        if first:
            self._pods.add_handler(self._pod_handler)  # the shared informer lists every Pod again for it
        else:
            self._list_pods_of(added)

    def changed(self, event_type: str, obj: Obj) -> None:
        """A namespace gained or lost the label (or was deleted)."""
        name = _name(obj)
        with self._lock:
            known = self._namespaces if self._namespaces is not None else set()
            added = event_type != "DELETED" and name not in known
            if event_type == "DELETED":
                known.discard(name)
            else:
                known.add(name)
        if added:
            log.info("namespace %s is now watched", name)
            self._list_pods_of([name])

    def _list_pods_of(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            listing = Informer(functools.partial(self._core.list_namespaced_pod, name), kind="Pod", api_version="v1")
            self._on_pods(listing.list_now(), False)


class _WatchedPods:
    """The handler PodWatch adds to the shared Pod informer: Pods of watched namespaces only."""

    def __init__(
        self,
        watches: Callable[[Obj], bool],
        on_pods: Callable[[list[Obj], bool], None],
        on_deleted: Callable[[Obj], None],
    ) -> None:
        self._watches, self._on_pods, self._on_deleted = watches, on_pods, on_deleted

    def listed(self, objects: list[Obj]) -> None:
        self._on_pods([pod for pod in objects if self._watches(pod)], True)

    def changed(self, event_type: str, obj: Obj) -> None:
        if event_type == "DELETED":
            self._on_deleted(obj)
        elif self._watches(obj):
            self._on_pods([obj], False)


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")
