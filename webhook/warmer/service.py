"""The warmer process, wired: the queue copying into the CCR, hints, the Pod watch under a Lease, Events, metrics,
and the CCR's retention (evictions run by the Lease holder).

Every replica copies what it is hinted; only the Lease holder hands Pods to the intake, so N replicas do
not all copy the same images. One Pod informer per process serves both the leader's watch and retention.
A copy is idempotent, so the rare double copy around a change of leader costs a few HEAD requests, not a
wrong CCR.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client import CoordinationV1Api, CoreV1Api

from webhook.config import Config
from webhook.copier.engine import CopyResult, copy_warm_request
from webhook.hints import PATH, hints_route
from webhook.http_service import HTTPService, Reply, Request
from webhook.kube.informer import Informer
from webhook.kube.lease import LeaderElection
from webhook.policy.decide import WarmRequest
from webhook.registry.client import Registries
from webhook.registry.resolver import Resolver
from webhook.retention.metrics import RetentionMetrics
from webhook.retention.schedule import ScheduledRetention
from webhook.retention.watch import POD_KIND
from webhook.warmer.events import WarmEvents
from webhook.warmer.intake import Intake
from webhook.warmer.metrics import WarmerMetrics
from webhook.warmer.pods import PodIndex
from webhook.warmer.queue import JobState, WarmJob, WarmQueue
from webhook.warmer.sightings import Sightings
from webhook.warmer.watch import PodWatch

log = logging.getLogger("webhook.warmer")


class Warmer:
    """One warmer replica; start() it, stop() it on SIGTERM."""

    def __init__(self, config: Config, api_client: Any, *, identity: str) -> None:
        settings = config.warmer
        self.config = config
        self.registries = Registries(config)
        self.resolver = Resolver(config, self.registries)
        self.index = PodIndex()
        self.queue = WarmQueue(
            self._copy,
            concurrency=settings.concurrency,
            max_attempts=settings.max_attempts,
            backoff_seconds=settings.backoff_seconds,
            backoff_max_seconds=settings.backoff_max_seconds,
            on_change=self._job_changed,
        )
        self.metrics = WarmerMetrics(lambda: self.queue.depth, lambda: self.queue.in_flight)
        self._core = CoreV1Api(api_client)
        self.events = WarmEvents(
            self._core,
            self.index.pods_for,
            interval=settings.event_interval_seconds,
            pods_per_image=settings.event_pods_per_image,
            instance=identity,
        )
        lookup_seconds = config.resolver.connect_timeout_seconds + config.resolver.read_timeout_seconds
        self.intake = Intake(
            Sightings(config, self.resolver, lookup_seconds),
            self.queue,
            self.index,
            on_hint=lambda accepted: self.metrics.hints.labels("accepted" if accepted else "rejected").inc(),
        )
        self.election = LeaderElection(
            CoordinationV1Api(api_client),
            name=settings.lease_name,
            namespace=settings.lease_namespace,
            identity=identity,
            lease_seconds=settings.lease_seconds,
            on_started=self._lead,
            on_stopped=self._stop_watching,
        )
        self.hint_server = HTTPService(
            settings.listen, {("POST", PATH): hints_route(self.intake.hinted)}, name="hints", loopback_only=True
        )
        self.metrics_server = HTTPService(
            settings.metrics_listen,
            {
                ("GET", "/metrics"): self._exposition,
                ("GET", "/healthz"): self._healthz,
                ("GET", "/readyz"): lambda request: Reply(200, b"ready\n"),
            },
            name="metrics",
            probes=("/healthz", "/readyz"),  # answered by the server's loop: however busy its threads are
        )
        self._watch: PodWatch | None = None
        # The one Pod informer of this process: it lists and watches only while the leader's watch or retention listens.
        self.pods: Informer = POD_KIND.informer(api_client, resync_seconds=settings.resync_seconds)
        # Retention follows usage on every replica and evicts on the leader; an eviction is forgotten here at once.
        self.retention = ScheduledRetention(
            config,
            api_client,
            self.registries.ccr,
            lambda: self.election.leading,
            metrics=RetentionMetrics(self.metrics.registry),
            on_evicted=self._evicted,
            pods=self.pods,
        )

    def start(self) -> Warmer:
        """Start copying, serving, and campaigning for the Lease."""
        self.queue.start()
        self.pods.start()
        self.events.start()
        self.hint_server.start()
        self.election.start()
        self.retention.start()
        self.metrics_server.start()  # last: /readyz answers once everything else runs
        log.info(
            "warmer %s: hints on %s, metrics on %s",
            self.election.identity,
            self.config.warmer.listen,
            self.config.warmer.metrics_listen,
        )
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stop taking hints, give up the Lease, let running copies finish (up to `timeout`), post the last Events."""
        self.hint_server.stop()
        self.election.stop()
        self._stop_watching()
        self.retention.stop()
        self.pods.stop()
        self.queue.stop(timeout)
        self.events.stop()
        self.metrics_server.stop()
        self.registries.close()

    def _evicted(self, repository: str, digest: str) -> None:
        """Retention removed `repository@digest` from the CCR: neither cache nor queue may still say it is there."""
        self.resolver.forget_ccr(repository, digest)
        self.queue.forget(f"{self.config.ccr.registry}/{repository}", digest)

    def _lead(self) -> None:
        values = ("enforce", "dry-run") if self.config.warmer.warm_dry_run_namespaces else ("enforce",)
        self._watch = PodWatch(
            self._core,
            self.pods,
            label=self.config.warmer.namespace_label,
            values=values,
            on_pods=self.intake.pods_seen,
            on_deleted=self.intake.pod_deleted,
            resync_seconds=self.config.warmer.resync_seconds,
        ).start()
        self.metrics.leader.set(1)

    def _stop_watching(self) -> None:
        self.metrics.leader.set(0)
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def _copy(self, request: WarmRequest) -> CopyResult:
        try:
            return copy_warm_request(
                self.registries,
                request,
                limits=self.config.copy,
                progress=lambda progress: self.events.progress(request, progress),
            )
        except Exception as err:
            self.metrics.attempt_failed(err)
            raise

    def _job_changed(self, job: WarmJob) -> None:
        self.metrics.job_changed(job)
        self.events.job_changed(job)
        target = job.request.target
        fields: dict[str, object] = {"image": str(job.request.source), "target": str(target), "attempt": job.attempts}
        if job.state is JobState.DONE and target.digest:
            self.resolver.mark_in_ccr(target.repository, target.digest)
            if isinstance(job.result, CopyResult):
                fields.update(copy_fields(job.result))
            log.info("warmed %s", target, extra={"fields": fields})
        elif job.state is JobState.FAILED:
            fields["error"] = job.error
            log.warning(
                "warm of %s failed after %d attempts: %s",
                job.request.source,
                job.attempts,
                job.error,
                extra={"fields": fields},
            )
        elif job.state is JobState.RUNNING:
            log.info(
                "warming %s into %s (attempt %d)", job.request.source, target, job.attempts, extra={"fields": fields}
            )

    def _healthz(self, request: Request) -> Reply:
        parts = {"queue": self.queue.alive, "hints": self.hint_server.alive, "election": self.election.alive}
        watch = self._watch
        if watch is not None:
            parts["watch"] = watch.alive
        broken = [name for name, alive in parts.items() if not alive]
        return Reply(503, f"not running: {', '.join(broken)}\n".encode()) if broken else Reply(200, b"ok\n")

    def _exposition(self, request: Request) -> Reply:
        body, content_type = self.metrics.exposition()
        return Reply(200, body, content_type)


def copy_fields(result: CopyResult) -> dict[str, object]:
    """What a finished copy moved, as log fields: bytes, blobs by how they got there, seconds."""
    return {
        "digest": result.digest,
        "bytes_copied": result.bytes_copied,
        "blobs_copied": result.blobs_copied,
        "blobs_skipped": result.blobs_skipped,
        "blobs_mounted": result.blobs_mounted,
        "seconds": round(result.seconds, 3),
    }
