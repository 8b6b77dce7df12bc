"""The warm queue: deduplication, bounded concurrency, retries with backoff, waiting for a job."""

import threading
import time

from tests.support.waiting import wait_until
from webhook.policy.decide import WarmRequest
from webhook.policy.reference import parse_image
from webhook.warmer.queue import JobState, WarmQueue

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def request(digest=D1, tag="1"):
    source = parse_image(f"up.io/app:{tag}@{digest}")
    return WarmRequest(source, source.with_registry("ccr:5000", "up.io"))


class Copier:
    """Records copies; fails the first `failures` attempts; can hold every copy until released."""

    def __init__(self, failures=0, error=None):
        self.failures = failures
        self.error = error or RuntimeError("upstream dropped the connection")
        self.calls = []
        self.running = 0
        self.most_running = 0
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()

    def __call__(self, req):
        with self.lock:
            self.calls.append(req)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.gate.wait(10)
            with self.lock:
                if len(self.calls) <= self.failures:
                    raise self.error
            return "copied"
        finally:
            with self.lock:
                self.running -= 1


def test_one_copy_for_many_submissions_of_one_image():
    copier = Copier()
    copier.gate.clear()
    queue = WarmQueue(copier, concurrency=4).start()
    try:
        jobs = {id(queue.submit(request(tag=tag))) for tag in ("1", "1.0", "1")}  # tags differ, digest same
        assert len(jobs) == 1
        copier.gate.set()
        job = queue.wait(request(), 5)
        assert job.state is JobState.DONE and job.result == "copied"
        queue.submit(request())  # recently done: not copied again
        assert len(copier.calls) == 1
    finally:
        queue.stop()


def test_concurrency_is_bounded():
    copier = Copier()
    copier.gate.clear()
    queue = WarmQueue(copier, concurrency=2).start()
    try:
        for i in range(6):
            queue.submit(request(digest="sha256:" + str(i) * 64))
        wait_until(lambda: queue.in_flight == 2)
        assert queue.depth == 4
        copier.gate.set()
        wait_until(lambda: len(copier.calls) == 6 and queue.in_flight == 0)
        assert copier.most_running == 2
    finally:
        queue.stop()


def test_failures_are_retried_with_backoff_then_succeed():
    copier = Copier(failures=2)
    changes = []
    queue = WarmQueue(copier, backoff_seconds=0.05, on_change=lambda job: changes.append(job.state)).start()
    try:
        queue.submit(request())
        job = queue.wait(request(), 5)
        wait_until(lambda: job.state is JobState.DONE)
        assert job.attempts == 3 and job.error is None
        assert changes.count(JobState.RUNNING) == 3
    finally:
        queue.stop()


def test_gives_up_after_max_attempts_and_a_later_sighting_tries_again():
    copier = Copier(failures=99)
    queue = WarmQueue(copier, max_attempts=2, backoff_seconds=0.01).start()
    try:
        queue.submit(request())
        wait_until(lambda: queue.jobs()[0].state is JobState.FAILED)
        job = queue.jobs()[0]
        assert job.attempts == 2 and "dropped the connection" in job.error
        queue.submit(request())
        wait_until(lambda: len(copier.calls) >= 3)
    finally:
        queue.stop()


def test_errors_marked_not_retryable_fail_at_once():
    error = RuntimeError("manifest unknown upstream")
    error.retryable = False
    queue = WarmQueue(Copier(failures=1, error=error)).start()
    try:
        queue.submit(request())
        job = queue.wait(request(), 5)
        assert job.state is JobState.FAILED and job.attempts == 1
    finally:
        queue.stop()


def test_retry_after_is_honoured():
    error = RuntimeError("429 too many requests")
    error.retry_after = 0.4
    copier = Copier(failures=1, error=error)
    queue = WarmQueue(copier, backoff_seconds=0.01).start()
    try:
        started = time.monotonic()
        queue.submit(request())
        wait_until(lambda: len(copier.calls) == 2)
        assert time.monotonic() - started >= 0.4
    finally:
        queue.stop()


def test_wait_returns_on_timeout_and_for_unknown_jobs():
    copier = Copier()
    copier.gate.clear()
    queue = WarmQueue(copier).start()
    try:
        assert queue.wait(request(), 0.1) is None
        queue.submit(request())
        job = queue.wait(request(), 0.1)
        assert job.state in (JobState.QUEUED, JobState.RUNNING)
        copier.gate.set()
    finally:
        queue.stop()


def test_forgetting_a_finished_job_lets_the_next_sighting_copy_again():
    copier = Copier()
    queue = WarmQueue(copier).start()
    try:
        queue.submit(request())
        wait_until(lambda: queue.jobs() and queue.jobs()[0].state is JobState.DONE)
        queue.submit(request())
        assert len(copier.calls) == 1  # remembered as done
        target = request().target
        queue.forget(target.name, target.digest)  # retention evicted it from the CCR
        queue.submit(request())
        wait_until(lambda: len(copier.calls) == 2)
    finally:
        queue.stop()


def test_a_retry_after_of_days_is_capped_at_the_backoff_maximum():
    error = RuntimeError("429 too many requests")
    error.retry_after = 3 * 86400.0
    copier = Copier(failures=1, error=error)
    queue = WarmQueue(copier, backoff_seconds=0.01, backoff_max_seconds=0.2).start()
    try:
        queue.submit(request())
        wait_until(lambda: len(copier.calls) == 2 and queue.jobs()[0].state is JobState.DONE)
    finally:
        queue.stop()


def test_the_job_table_keeps_a_bounded_number_of_finished_jobs_and_none_past_their_time():
    now = [0.0]
    queue = WarmQueue(Copier(), concurrency=4, max_finished=50, remember_seconds=60, clock=lambda: now[0]).start()
    try:
        for number in range(2000):
            queue.submit(request(digest=f"sha256:{number:064x}"))
        wait_until(lambda: queue.depth == 0 and queue.in_flight == 0, timeout=20)
        assert len(queue.jobs()) == 50  # not 2000: the oldest finished jobs went first
        assert {job.request.source.digest for job in queue.jobs()} == {f"sha256:{n:064x}" for n in range(1950, 2000)}
        now[0] = 61.0  # past remember_seconds: the next finished job takes every older one with it
        queue.submit(request(digest=D2))
        wait_until(lambda: [job.request.source.digest for job in queue.jobs()] == [D2])
    finally:
        queue.stop()
