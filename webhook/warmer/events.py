"""Kubernetes Events on the Pods that use an image, when its warm starts, progresses, finishes or fails.

`kubectl describe pod` then says why a Pod still pulls from upstream, or what its pull through the CCR
front waits for: "CCR: pulling 1.2 GB from docker.io, 45% done, about 30 s left". Events are limited
twice over, so a popular image or a failing registry cannot flood the API server: per image, at most one
Event of each reason every `interval` seconds (progress: every `progress_interval`), on at most
`pods_per_image` Pods. They are posted by one
background thread from a bounded backlog (full: dropped), so a slow API server never slows a copy.
Messages name images and registry answers only, never credentials (URL user info is cut out anyway).
The time left is given once there is a rate to estimate it from (`copier.eta`), not in the first Event.
A warm the CCR front refused for want of room (its 507: over retention.maxBytes) says so first, in those words.
"""

from __future__ import annotations

import datetime
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client import CoreV1Api

from webhook.copier.engine import CopyProgress, CopyResult
from webhook.copier.eta import TimeLeft, time_left_text
from webhook.policy.decide import WarmRequest
from webhook.registry.errors import InsufficientStorage
from webhook.warmer.pods import PodRef
from webhook.warmer.queue import JobState, WarmJob, job_key

COMPONENT = "ccr-webhook-warmer"
OVER_BUDGET = "the CCR is over its storage budget (retention.maxBytes)"
STARTED, PROGRESS, FINISHED, FAILED = "CCRWarmStarted", "CCRWarmProgress", "CCRWarmFinished", "CCRWarmFailed"
MAX_MESSAGE = 1024
MAX_COPIES_FOLLOWED = 1024  # copies whose time left is estimated at once; the queue runs far fewer
_USER_INFO = re.compile(r"(?<=://)[^/@\s]+@")
log = logging.getLogger("webhook.warmer.events")


def warm_event(job: WarmJob) -> tuple[str, str, str] | None:
    """(reason, type, message) for a change of `job` worth an Event, or None."""
    source, target = job.request.source, job.request.target
    if job.state is JobState.RUNNING and job.attempts == 1:
        return STARTED, "Normal", f"copying {source} into the CCR as {target}"
    if job.state is JobState.DONE and isinstance(job.result, CopyResult):
        result = job.result
        untagged = (
            f"; stored by digest only, as upstream's tag {source.tag} names another image now"
            if target.tag and result.tag is None
            else ""
        )
        return (
            FINISHED,
            "Normal",
            (
                f"{target} is in the CCR: {_size(result.bytes_copied)} copied in {result.seconds:.1f} s "
                f"({result.blobs_copied} blobs copied, {result.blobs_skipped} already there, "
                f"{result.blobs_mounted} mounted){untagged}"
            ),
        )
    if job.state is JobState.FAILED:
        tries = f"{job.attempts} attempt{'s' if job.attempts != 1 else ''}"
        no_room = _no_room(job.failure)
        why = f"{OVER_BUDGET}: {no_room.reason or no_room}" if no_room is not None else job.error
        return FAILED, "Warning", f"could not copy {source} into the CCR ({tries}): {why}; it stays on its upstream"
    return None


def _no_room(error: BaseException | None) -> InsufficientStorage | None:
    """The CCR's 507 (its front over the storage budget) behind a failed copy, if that is why it failed."""
    while error is not None and not isinstance(error, InsufficientStorage):
        error = error.__cause__
    return error


def progress_message(request: WarmRequest, progress: CopyProgress, seconds_left: float | None) -> str | None:
    """ "CCR: pulling 1.2 GB from docker.io, 45% done, about 30 s left", or None before any blob byte has moved."""
    if progress.phase != "blobs" or progress.bytes_total <= 0 or progress.bytes_copied <= 0:
        return None
    done = min(progress.bytes_done, progress.bytes_total)
    return (
        f"CCR: pulling {_size(progress.bytes_total)} from {request.source.registry}, "
        f"{100 * done // progress.bytes_total}% done, {time_left_text(seconds_left)}"
    )


def scrub(message: str) -> str:
    """`message` without URL user info, cut to what an Event holds."""
    message = _USER_INFO.sub("", message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


class WarmEvents:
    """Posts warm Events on the Pods `pods_for(job_key, limit)` names, within the limits above."""

    def __init__(
        self,
        core: CoreV1Api,
        pods_for: Callable[[str, int], list[PodRef]],
        *,
        interval: float,
        pods_per_image: int,
        instance: str,
        progress_interval: float = 10.0,
        backlog: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = core
        self._pods_for = pods_for
        self._interval, self._pods_per_image = interval, pods_per_image
        self._progress_interval = progress_interval
        self._instance = instance
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._time_left: dict[str, TimeLeft] = {}  # per running copy; bounded with _last
        self._lock = threading.Lock()
        self._backlog: queue.Queue[dict[str, Any] | None] = queue.Queue(backlog)
        self._thread: threading.Thread | None = None

    def start(self) -> WarmEvents:
        """Start the posting thread."""
        self._thread = threading.Thread(target=self._post_forever, name="warm-events", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Post what is queued (within `timeout`), then stop."""
        if self._thread is not None:
            try:
                self._backlog.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout)

    def job_changed(self, job: WarmJob) -> None:
        """Queue the Events a change of `job` calls for, if the limits allow; never blocks."""
        if job.state in (JobState.DONE, JobState.FAILED):
            with self._lock:
                self._time_left.pop(job.key, None)
        event = warm_event(job)
        if event is not None and self._pods_per_image > 0 and self._allowed(job.key, event[0], self._interval):
            self._post(job.key, *event)

    def progress(self, request: WarmRequest, progress: CopyProgress) -> None:
        """Queue a progress Event with percent and time left, at most every `progress_interval`; never blocks."""
        key = job_key(request)
        if self._pods_per_image == 0:
            return
        with self._lock:
            if key not in self._time_left and len(self._time_left) >= MAX_COPIES_FOLLOWED:
                self._time_left.clear()  # bounded: only estimates are lost, and they start again
            estimate = self._time_left.setdefault(key, TimeLeft())
            seconds_left = estimate.seconds_left(progress)
        if (message := progress_message(request, progress, seconds_left)) is None:
            return
        if self._allowed(key, PROGRESS, self._progress_interval):
            self._post(key, PROGRESS, "Normal", message)

    def _post(self, key: str, reason: str, kind: str, message: str) -> None:
        for pod in self._pods_for(key, self._pods_per_image):
            try:
                self._backlog.put_nowait(self._event(pod, reason, kind, message))
            except queue.Full:
                log.warning("Event backlog full: dropped %s for %s/%s", reason, pod.namespace, pod.name)

    def _allowed(self, key: str, reason: str, interval: float) -> bool:
        """Whether an Event of `reason` for image `key` may go out now, `interval` after the last (and record it)."""
        now = self._clock()
        with self._lock:
            last = self._last.get((key, reason))
            if last is not None and now - last < interval:
                return False
            self._last[(key, reason)] = now
            if len(self._last) > 4096:  # bounded: forget what is past its interval
                longest = max(self._interval, self._progress_interval)
                self._last = {k: t for k, t in self._last.items() if now - t < longest}
            return True

    def _event(self, pod: PodRef, reason: str, kind: str, message: str) -> dict[str, Any]:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{pod.name}.{secrets.token_hex(8)}", "namespace": pod.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.uid,
            },
            "reason": reason,
            "type": kind,
            "message": scrub(message),
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
        }

    def _post_forever(self) -> None:
        while (event := self._backlog.get()) is not None:
            try:
                # A plain dict is sent as it is; the client's stubs only name its model class.
                self._core.create_namespaced_event(event["metadata"]["namespace"], event)  # type: ignore[arg-type]
            except Exception as err:
                log.warning(
                    "could not post Event %s on %s: %s",
                    event["reason"],
                    event["involvedObject"]["name"],
                    getattr(err, "reason", None) or err,
                )


def _size(count: int) -> str:
    """Bytes for people: 512 B, 3.4 MB, 1.2 GB."""
    size, unit = float(count), "B"
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            break
        size /= 1000
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
