"""Usage tracking fed from the API server: one informer per kind (the Pod one shared with the warmer) feeds the tracker.

Every Namespace, Pod and workload is listed cluster-wide, then watched (webhook.kube.informer); each
listing replaces what the UsageTracker knows of that kind, each event updates it. Before deleting,
retention confirms usage with a fresh list of every kind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from webhook.config import Config
from webhook.kube.informer import Informer, Obj
from webhook.retention.usage import InUse, UsageTracker


@dataclass(frozen=True, slots=True)
class WatchedKind:
    """A kind the tracker follows, and the cluster-wide list call of the kubernetes client that serves it."""

    kind: str
    api_version: str
    api: Callable[[client.ApiClient], Any]
    method: str

    def informer(self, api_client: client.ApiClient, **options: Any) -> Informer:
        """An informer over every object of this kind."""
        call = getattr(self.api(api_client), self.method)
        return Informer(call, kind=self.kind, api_version=self.api_version, **options)


WATCHED_KINDS = (
    WatchedKind("Namespace", "v1", client.CoreV1Api, "list_namespace"),
    WatchedKind("Pod", "v1", client.CoreV1Api, "list_pod_for_all_namespaces"),
    WatchedKind("Deployment", "apps/v1", client.AppsV1Api, "list_deployment_for_all_namespaces"),
    WatchedKind("StatefulSet", "apps/v1", client.AppsV1Api, "list_stateful_set_for_all_namespaces"),
    WatchedKind("DaemonSet", "apps/v1", client.AppsV1Api, "list_daemon_set_for_all_namespaces"),
    WatchedKind("ReplicaSet", "apps/v1", client.AppsV1Api, "list_replica_set_for_all_namespaces"),
    WatchedKind("Job", "batch/v1", client.BatchV1Api, "list_job_for_all_namespaces"),
    WatchedKind("CronJob", "batch/v1", client.BatchV1Api, "list_cron_job_for_all_namespaces"),
)
POD_KIND = WATCHED_KINDS[1]


class _Feed:
    """An informer handler that keeps the tracker's picture of one kind; `listed_once` tells a first listing came."""

    def __init__(self, tracker: UsageTracker, kind: str) -> None:
        self._tracker, self._kind = tracker, kind
        self.listed_once = threading.Event()

    def listed(self, objects: list[Obj]) -> None:
        self._tracker.replace(self._kind, objects)
        self.listed_once.set()

    def changed(self, event_type: str, obj: Obj) -> None:
        self._tracker.apply(event_type, obj)


class ClusterUsage:
    """Keeps a UsageTracker current from the API server, and confirms usage with a fresh list before deletes.

    `pods` is the process's shared Pod informer (the warmer's); without it ClusterUsage makes its own.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        config: Config,
        tracker: UsageTracker | None = None,
        *,
        pods: Informer | None = None,
        watch_seconds: float = 300.0,
        retry_seconds: float = 5.0,
    ) -> None:
        self.tracker = tracker or UsageTracker(config)
        self._config = config
        options = {"watch_seconds": watch_seconds, "retry_seconds": retry_seconds}
        self._owned = [
            watched.informer(api_client, **options)
            for watched in WATCHED_KINDS
            if pods is None or watched is not POD_KIND
        ]
        self._informers = self._owned if pods is None else [*self._owned, pods]
        self._feeds = [_Feed(self.tracker, informer.kind) for informer in self._informers]

    def start(self) -> ClusterUsage:
        """Follow every kind (the shared Pod informer lists again for this new listener)."""
        for informer, feed in zip(self._informers, self._feeds, strict=True):
            informer.add_handler(feed)
            informer.start()
        return self

    def stop(self) -> None:
        """Stop following: the informers of its own stop, the shared one only stops telling this tracker."""
        for informer, feed in zip(self._informers, self._feeds, strict=True):
            informer.remove_handler(feed)
        for informer in self._owned:
            informer.stop()

    def wait_synced(self, timeout: float) -> bool:
        """Whether every kind reached the tracker in full within `timeout` seconds: before that, usage is incomplete."""
        deadline = time.monotonic() + timeout
        return all(feed.listed_once.wait(max(0.0, deadline - time.monotonic())) for feed in self._feeds)

    def confirm(self) -> InUse:
        """What live objects name now, per a fresh list of every kind joined with the watches (asked before deletes)."""
        fresh = UsageTracker(self._config)
        for informer in self._informers:
            fresh.replace(informer.kind, informer.list_now())
        live, listed = self.tracker.in_use(), fresh.in_use()
        return InUse(digests=live.digests | listed.digests, tags=live.tags | listed.tags)
