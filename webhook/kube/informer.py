"""List and watch the Pods of the namespaces labelled for ccr-webhook, so no image is missed.

Two loops, each list-then-watch: one over the labelled namespaces (a namespace labelled later is picked
up, its Pods listed at once), one over the Pods of every namespace, kept to the labelled ones. Each loop
lists again on start, when the API server answers 410 Gone (its history no longer reaches our
resourceVersion), after an error, and every `resync_seconds`, so a hint lost to a crash, a warm that
gave up, or an image that could not be resolved is looked at again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import urllib3
from kubernetes import watch
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]
ListCall = Callable[..., Any]
log = logging.getLogger("webhook.kube.informer")


class PodWatch:
    """Hands `on_pods(pods, complete)` every Pod of a namespace whose `label` is one of `values`.

    `complete` is True for a full listing (every watched Pod there is); `on_deleted(pod)` hears deletions.
    """

    def __init__(
        self,
        core: CoreV1Api,
        *,
        label: str,
        values: Iterable[str],
        on_pods: Callable[[list[Obj], bool], None],
        on_deleted: Callable[[Obj], None],
        resync_seconds: float = 600.0,
        watch_seconds: float = 300.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self._core = core
        self._selector = f"{label} in ({','.join(sorted(values))})"
        self._on_pods, self._on_deleted = on_pods, on_deleted
        self._resync, self._watch_seconds, self._retry = resync_seconds, watch_seconds, retry_seconds
        self._namespaces: set[str] = set()
        self._namespaces_known = threading.Event()
        self._stopped = threading.Event()
        self._watches: set[watch.Watch] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> PodWatch:
        """Start both loops in background threads."""
        loops = {"watch-namespaces": self._namespace_loop, "watch-pods": self._pod_loop}
        self._threads = [threading.Thread(target=loop, name=name, daemon=True) for name, loop in loops.items()]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both loops, cutting the open watches short."""
        self._stopped.set()
        self._namespaces_known.set()
        with self._lock:
            for open_watch in list(self._watches):
                open_watch.stop()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether both loops run."""
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    # -- the two loops ---------------------------------------------------------------------------------

    def _namespace_loop(self) -> None:
        self._list_and_watch(
            "namespaces",
            lambda **kw: self._core.list_namespace(label_selector=self._selector, **kw),
            self._namespaces_listed,
            self._namespace_event,
        )

    def _pod_loop(self) -> None:
        self._namespaces_known.wait()
        self._list_and_watch("pods", self._core.list_pod_for_all_namespaces, self._pods_listed, self._pod_event)

    def _namespaces_listed(self, items: list[Obj]) -> None:
        names = {item["metadata"]["name"] for item in items}
        with self._lock:
            added, self._namespaces = names - self._namespaces, names
        if self._namespaces_known.is_set():
            self._list_pods_of(added)
        self._namespaces_known.set()

    def _namespace_event(self, kind: str, namespace: Obj) -> None:
        name = namespace["metadata"]["name"]
        with self._lock:
            added = kind != "DELETED" and name not in self._namespaces
            if kind == "DELETED":
                self._namespaces.discard(name)
            else:
                self._namespaces.add(name)
        if added:
            log.info("namespace %s is now watched", name)
            self._list_pods_of([name])

    def _list_pods_of(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            self._on_pods(self._list(self._core.list_namespaced_pod, name)["items"], False)

    def _pods_listed(self, items: list[Obj]) -> None:
        with self._lock:
            watched = set(self._namespaces)
        self._on_pods([pod for pod in items if pod["metadata"].get("namespace") in watched], True)

    def _pod_event(self, kind: str, pod: Obj) -> None:
        if kind == "DELETED":
            self._on_deleted(pod)
            return
        with self._lock:
            watched = pod["metadata"].get("namespace") in self._namespaces
        if watched:
            self._on_pods([pod], False)

    # -- list, then watch ------------------------------------------------------------------------------

    def _list_and_watch(
        self, what: str, list_call: ListCall, on_list: Callable[[list[Obj]], None], on_event: Callable[[str, Obj], None]
    ) -> None:
        """List, hand the items over, watch from the listing's resourceVersion; again on 410, error or resync."""
        retry = self._retry
        while not self._stopped.is_set():
            try:
                listing = self._list(list_call)
                on_list(listing["items"])
                self._follow(list_call, listing["metadata"]["resourceVersion"], on_event)
                retry = self._retry
            except ApiException as err:
                if self._stopped.is_set():
                    return
                if err.status == 410:
                    log.info("watch of %s expired (410 Gone): listing again", what)
                    continue
                log.warning("list/watch of %s failed: HTTP %s %s; again in %g s", what, err.status, err.reason, retry)
            except (urllib3.exceptions.HTTPError, OSError, ValueError, KeyError) as err:
                if self._stopped.is_set():
                    return
                log.warning("list/watch of %s failed: %s; again in %g s", what, err, retry)
            except Exception:
                log.exception("list/watch of %s failed; again in %g s", what, retry)
            self._stopped.wait(retry)
            retry = min(retry * 2, 30.0)

    def _follow(self, list_call: ListCall, resource_version: str, on_event: Callable[[str, Obj], None]) -> None:
        """Watch from `resource_version` until the next resync is due (or stop)."""
        resync_at = time.monotonic() + self._resync
        while not self._stopped.is_set() and (remaining := resync_at - time.monotonic()) > 0:
            open_watch = watch.Watch()
            with self._lock:
                self._watches.add(open_watch)
            try:
                seconds = max(1, int(min(self._watch_seconds, remaining)))
                for event in open_watch.stream(
                    list_call,
                    resource_version=resource_version,
                    timeout_seconds=seconds,
                    allow_watch_bookmarks=True,
                    _request_timeout=seconds + 30,
                ):
                    obj = event["raw_object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        on_event(event["type"], obj)
            finally:
                with self._lock:
                    self._watches.discard(open_watch)

    @staticmethod
    def _list(list_call: ListCall, *args: Any) -> Obj:
        """One listing as plain JSON (no model objects: the warmer reads a few fields of many Pods)."""
        response = list_call(*args, _preload_content=False, _request_timeout=60)
        return json.loads(response.data)
