"""The thin I/O edge of usage tracking: list, then watch, Namespaces, Pods and workloads with the kubernetes client.

One thread per kind lists every object (cluster-wide, paginated), hands the list to the UsageTracker,
then watches from the list's resourceVersion, applying each event; when a watch ends it resumes from the
last version seen, and after 410 Gone or any error it lists again. Objects are read as plain JSON, the
shape `webhook.policy.workloads` reads, never as client models.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from webhook.config import Config
from webhook.errors import CCRWebhookError
from webhook.retention.usage import InUse, UsageTracker

log = logging.getLogger(__name__)
LIST_PAGE = 500


@dataclass(frozen=True, slots=True)
class WatchedKind:
    """A kind the tracker follows, and the cluster-wide list call of the kubernetes client that serves it."""

    kind: str
    api_version: str
    api: Callable[[client.ApiClient], Any]
    method: str


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


class _Relist(CCRWebhookError):
    """The watch cannot resume (410 Gone): list again."""


class ClusterUsage:
    """Keeps a UsageTracker current from the API server, and confirms usage with a fresh list before deletes."""

    def __init__(
        self,
        api_client: client.ApiClient,
        config: Config,
        tracker: UsageTracker | None = None,
        *,
        watch_seconds: int = 300,
        retry_seconds: float = 5.0,
    ) -> None:
        self.tracker = tracker or UsageTracker(config)
        self._config = config
        self._api_client = api_client
        self._watch_seconds = watch_seconds
        self._retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._listed = {watched.kind: threading.Event() for watched in WATCHED_KINDS}
        self._threads: list[threading.Thread] = []

    def start(self) -> ClusterUsage:
        """Start one list-and-watch thread per kind."""
        for watched in WATCHED_KINDS:
            thread = threading.Thread(target=self._follow, args=(watched,), name=f"usage-{watched.kind}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop following; threads end when their watch request returns (at most `watch_seconds`)."""
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        """Whether every kind has been listed once within `timeout` seconds: before that, usage is incomplete."""
        return all(event.wait(timeout) for event in self._listed.values())

    def confirm(self) -> InUse:
        """What live objects name per a fresh list of every kind, joined with the watches: asked right before deleting."""
        fresh = UsageTracker(self._config)
        for watched in WATCHED_KINDS:
            fresh.replace(watched.kind, self._list(watched)[0])
        live, listed = self.tracker.in_use(), fresh.in_use()
        return InUse(digests=live.digests | listed.digests, tags=live.tags | listed.tags)

    # -- the loop ------------------------------------------------------------------------------------

    def _follow(self, watched: WatchedKind) -> None:
        while not self._stop.is_set():
            try:
                objects, version = self._list(watched)
                self.tracker.replace(watched.kind, objects)
                self._listed[watched.kind].set()
                while not self._stop.is_set():
                    version = self._watch(watched, version)
            except _Relist:
                continue
            except Exception as err:
                log.warning(
                    "usage: listing or watching %s failed, retrying in %g s: %s", watched.kind, self._retry_seconds, err
                )
                self._stop.wait(self._retry_seconds)

    def _list(self, watched: WatchedKind) -> tuple[list[dict[str, Any]], str]:
        """Every object of a kind, page by page, with kind and apiVersion set, and the list's resourceVersion."""
        call = getattr(watched.api(self._api_client), watched.method)
        objects: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = json.loads(call(limit=LIST_PAGE, _continue=token, _preload_content=False).data)
            objects += [
                {**item, "kind": watched.kind, "apiVersion": watched.api_version} for item in page.get("items") or []
            ]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return objects, str(page["metadata"]["resourceVersion"])

    def _watch(self, watched: WatchedKind, version: str) -> str:
        """Apply the events of one watch request from `version`; return the last version seen."""
        call = getattr(watched.api(self._api_client), watched.method)
        response = call(
            watch=True,
            resource_version=version,
            timeout_seconds=self._watch_seconds,
            allow_watch_bookmarks=True,
            _preload_content=False,
        )
        try:
            for event in _events(response):
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise _Relist()
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if event.get("type") != "BOOKMARK":
                    self.tracker.apply(event["type"], {**obj, "kind": watched.kind, "apiVersion": watched.api_version})
                if self._stop.is_set():
                    break
        finally:
            response.close()
            response.release_conn()
        return version


def _events(response: Any) -> Iterator[dict[str, Any]]:
    """The JSON events of a watch response, one per line."""
    for line in iter_resp_lines(response):
        if line and not line.isspace():
            yield json.loads(line)
