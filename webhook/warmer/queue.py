"""The warm queue: copy jobs deduplicated by target digest, run with bounded concurrency, retried with capped backoff.

It holds no state worth keeping: a job lost with the process is found again by the Pod watch, and a
copy is idempotent, so the queue can be simple and in memory.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from webhook.policy.decide import WarmRequest


class JobState(str, enum.Enum):
    """Where a warm job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class WarmJob:
    """One image to copy, and what became of it."""

    request: WarmRequest
    state: JobState = JobState.QUEUED
    attempts: int = 0
    error: str | None = None
    failure: Exception | None = None  # the error behind `error`, for whoever explains it (the failure Event)
    result: object = None
    finished_at: float | None = None
    changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def key(self) -> str:
        """Deduplication key: the target image's name and digest (the tag is for people)."""
        return job_key(self.request)


def job_key(request: WarmRequest) -> str:
    """The key that makes two requests for the same image one job."""
    target = request.target
    return f"{target.name}@{target.digest or target.tag}"


class WarmQueue:
    """Runs `copy(request)` for each distinct image submitted, `concurrency` at a time.

    A failed copy is retried after an exponential backoff (or the error's `retry_after`, if longer), both
    capped at `backoff_max_seconds` so a registry asking for days parks nothing for days, up to
    `max_attempts`; an error with a false `retryable` attribute fails at once. A finished job is
    remembered for `remember_seconds`, so repeated sightings of an image do not copy it again; after
    that a new sighting checks it afresh. At most `max_finished` finished jobs are kept (the oldest go
    first), so the table does not grow with every image ever seen.
    """

    def __init__(
        self,
        copy: Callable[[WarmRequest], object],
        *,
        concurrency: int = 2,
        max_attempts: int = 5,
        backoff_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        remember_seconds: float = 300.0,
        max_finished: int = 4096,
        on_change: Callable[[WarmJob], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._copy = copy
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._backoff_max = backoff_max_seconds
        self._remember = remember_seconds
        self._max_finished = max_finished
        self._finished: OrderedDict[str, float] = OrderedDict()  # keys of finished jobs, oldest first
        self._on_change = on_change or (lambda job: None)
        self._clock = clock
        self._jobs: dict[str, WarmJob] = {}
        self._ready: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        self._lock = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> WarmQueue:
        """Start the worker threads."""
        for index in range(self._concurrency):
            thread = threading.Thread(target=self._work, name=f"warm-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; wait for the running copies up to `timeout`."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def submit(self, request: WarmRequest) -> WarmJob:
        """Queue `request` unless the same image is queued, running, or recently finished; return its job."""
        key = job_key(request)
        with self._lock:
            job = self._jobs.get(key)
            recent = (
                job is not None and job.finished_at is not None and self._clock() - job.finished_at < self._remember
            )
            if job is not None and (
                job.state in (JobState.QUEUED, JobState.RUNNING) or (recent and job.state is JobState.DONE)
            ):
                return job
            job = WarmJob(request)
            self._jobs[key] = job
            self._finished.pop(key, None)
            self._schedule(key, self._clock())
        self._on_change(job)
        return job

    def wait(self, request: WarmRequest, timeout: float) -> WarmJob | None:
        """Block until the job for `request` is done or failed, or `timeout` passes; the job, or None if unknown."""
        job = self._jobs.get(job_key(request))
        if job is None:
            return None
        deadline = self._clock() + timeout
        with job.changed:
            while job.state not in (JobState.DONE, JobState.FAILED):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                job.changed.wait(remaining)
        return job

    @property
    def alive(self) -> bool:
        """Whether every worker thread runs (false before start and after stop)."""
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    @property
    def depth(self) -> int:
        """Jobs waiting to run (including those waiting out a backoff)."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if job.state is JobState.QUEUED)

    @property
    def in_flight(self) -> int:
        """Jobs copying right now."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if job.state is JobState.RUNNING)

    def forget(self, target_name: str, digest: str) -> None:
        """Forget the finished job for `target_name@digest` (the CCR lost the image): a new sighting copies it again."""
        with self._lock:
            job = self._jobs.get(f"{target_name}@{digest}")
            if job is not None and job.state in (JobState.DONE, JobState.FAILED):
                del self._jobs[job.key]
                self._finished.pop(job.key, None)

    def jobs(self) -> list[WarmJob]:
        """A snapshot of every job known, for status pages and tests."""
        with self._lock:
            return list(self._jobs.values())

    # -- workers -----------------------------------------------------------------------------------

    def _schedule(self, key: str, when: float) -> None:
        heapq.heappush(self._ready, (when, next(self._sequence), key))
        self._lock.notify()

    def _next_job(self) -> WarmJob | None:
        """Wait for the next job whose time has come; None when stopping."""
        with self._lock:
            while not self._stopping:
                if self._ready and self._ready[0][0] <= self._clock():
                    _, _, key = heapq.heappop(self._ready)
                    job = self._jobs.get(key)
                    if job is not None and job.state is JobState.QUEUED:
                        self._set(job, JobState.RUNNING)
                        job.attempts += 1
                        return job
                    continue
                timeout = self._ready[0][0] - self._clock() if self._ready else None
                self._lock.wait(timeout)
            return None

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            self._on_change(job)
            try:
                job.result = self._copy(job.request)
            except Exception as err:
                self._failed(job, err)
            else:
                with self._lock:
                    job.error = job.failure = None
                    self._finish(job, JobState.DONE)
            self._on_change(job)

    def _failed(self, job: WarmJob, err: Exception) -> None:
        job.error, job.failure = str(err) or type(err).__name__, err
        with self._lock:
            retry = getattr(err, "retryable", True) and job.attempts < self._max_attempts and not self._stopping
            if retry:
                delay = max(self._backoff * 2 ** (job.attempts - 1), float(getattr(err, "retry_after", None) or 0))
                self._set(job, JobState.QUEUED)
                self._schedule(job.key, self._clock() + min(delay, self._backoff_max))
            else:
                self._finish(job, JobState.FAILED)

    def _finish(self, job: WarmJob, state: JobState) -> None:
        """Mark `job` done or failed (under the lock), and forget finished jobs past their time or their number."""
        now = self._clock()
        job.finished_at = now
        self._set(job, state)
        self._finished[job.key] = now
        self._finished.move_to_end(job.key)
        while self._finished:
            key, finished_at = next(iter(self._finished.items()))
            if len(self._finished) <= self._max_finished and now - finished_at < self._remember:
                break
            del self._finished[key]
            self._jobs.pop(key, None)

    def _set(self, job: WarmJob, state: JobState) -> None:
        with job.changed:
            job.state = state
            job.changed.notify_all()
