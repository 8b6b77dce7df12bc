"""The warmer's Events on the Pods waiting for an image: the Pod index they are posted to, messages, limits."""

from __future__ import annotations

import pytest

from tests.support.clock import Clock
from tests.support.warm_requests import DIGEST, warm_request
from webhook.copier.engine import CopyError, CopyProgress, CopyResult
from webhook.copier.eta import TimeLeft
from webhook.front.answers import error_body
from webhook.registry.errors import InsufficientStorage, RegistryServerError, error_for_status
from webhook.retention.budget import budget_refusal
from webhook.warmer.events import FAILED, FINISHED, PROGRESS, STARTED, WarmEvents, progress_message, scrub, warm_event
from webhook.warmer.pods import PodIndex, PodRef, pod_images
from webhook.warmer.queue import JobState, WarmJob, job_key

# -- Pods ----------------------------------------------------------------------------------------------


def pod(name, *images, init=()):
    return {
        "metadata": {"namespace": "team", "name": name, "uid": f"uid-{name}"},
        "spec": {
            "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
            "initContainers": [{"name": "init", "image": image} for image in init],
        },
    }


def test_pod_index_knows_each_pods_images_and_the_pods_of_each_image():
    index = PodIndex()
    a, b = PodRef.of(pod("a")), PodRef.of(pod("b"))
    assert pod_images(pod("a", "x:1", "y:1", init=["z:1"])) == {"x:1", "y:1", "z:1"}
    index.record(a, frozenset({"x:1"}), ["key"])
    index.record(b, frozenset({"x:1"}), ["key"])
    assert index.unseen_images(a, frozenset({"x:1", "y:1"})) == {"y:1"}
    assert index.pods_for("key", 5) == [a, b] and index.pods_for("key", 1) == [a]
    index.forget(a)
    assert index.pods_for("key", 5) == [b]
    index.retain([])
    assert index.pods_for("key", 5) == [] and index.unseen_images(b, frozenset({"x:1"})) == {"x:1"}


# -- Events --------------------------------------------------------------------------------------------


def job(state, attempts=1, result=None, error=None):
    found = WarmJob(warm_request(), state=state, attempts=attempts, error=error)
    found.result = result
    return found


def test_event_messages_say_what_happened_without_credentials():
    result = CopyResult(DIGEST, (DIGEST,), 3, 1, 0, 12_345_678, 4.25)
    assert warm_event(job(JobState.RUNNING))[:2] == (STARTED, "Normal")
    assert warm_event(job(JobState.RUNNING, attempts=2)) is None  # a retry is not a new start
    reason, kind, message = warm_event(job(JobState.DONE, result=result))
    assert (
        (reason, kind) == (FINISHED, "Normal") and "12.3 MB copied in 4.2 s" in message and "3 blobs copied" in message
    )
    reason, kind, message = warm_event(job(JobState.FAILED, attempts=5, error="HTTP 401 from https://up.io"))
    assert (reason, kind) == (FAILED, "Warning") and "5 attempts" in message and "HTTP 401" in message
    assert warm_event(job(JobState.QUEUED)) is None
    assert scrub("GET https://bob:hunter2@up.io/v2/ failed") == "GET https://up.io/v2/ failed"
    assert len(scrub("x" * 5000)) == 1024


class RecordingCore:
    def __init__(self):
        self.events = []

    def create_namespaced_event(self, namespace, body):
        self.events.append((namespace, body))


def test_events_are_limited_per_image_and_reason_and_capped_in_pods():
    index, core, clock = PodIndex(), RecordingCore(), Clock()
    key = job_key(warm_request())
    for name in "abcdef":
        index.record(PodRef.of(pod(name)), frozenset(), [key])
    events = WarmEvents(core, index.pods_for, interval=60, pods_per_image=2, instance="test", clock=clock).start()
    events.job_changed(job(JobState.RUNNING))
    events.job_changed(job(JobState.RUNNING))  # a second start of the same image within the minute: nothing
    events.job_changed(job(JobState.FAILED, error="boom"))  # another reason: posted
    clock.now += 61
    events.job_changed(job(JobState.RUNNING))  # the minute is over
    events.stop()
    posted = [(body["reason"], body["involvedObject"]["name"]) for _, body in core.events]
    assert posted == [(STARTED, "a"), (STARTED, "b"), (FAILED, "a"), (FAILED, "b"), (STARTED, "a"), (STARTED, "b")]
    namespace, body = core.events[0]
    assert namespace == "team" and body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "team",
        "name": "a",
        "uid": "uid-a",
    }
    assert body["type"] == "Normal" and body["source"] == {"component": "ccr-webhook-warmer"}


def progress(bytes_done, seconds, bytes_total=1_200_000_000, phase="blobs", bytes_copied=None):
    copied = bytes_done if bytes_copied is None else bytes_copied
    return CopyProgress("img", phase, 5, 2, bytes_total, bytes_done, copied, seconds)


def time_left(first, then):
    """The estimate after `first` then `then`: what a copy's second report makes of the rate since its first byte."""
    estimate = TimeLeft()
    estimate.seconds_left(first)
    return estimate.seconds_left(then)


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        # 500 MB in 35 s since the first byte, 660 MB to go
        (progress(40_000_000, 1.0), progress(540_000_000, 36.0), "45% done, about 45 s left"),
        (progress(2_000_000, 1.0), progress(120_000_000, 60.0), "10% done, about 9 min left"),
        (progress(1_000_000, 1.0), progress(1_190_000_000, 20.0), "99% done, a few seconds left"),
        # blobs the CCR held already count as done, not towards the rate: 300 MB in 10 s, 600 MB to go
        (
            progress(300_000_000, 2.0, bytes_copied=1),
            progress(600_000_000, 12.0, bytes_copied=300_000_001),
            "50% done, about 20 s left",
        ),
        # the first byte after 2.5 s of resolving and checking the CCR: no rate yet, so no estimate
        (progress(65_536, 2.5, bytes_total=6_000_000), None, "1% done, time left not known yet"),
        # less than the estimate's window since the first byte: still none
        (progress(65_536, 2.5), progress(10_000_000, 3.5), "0% done, time left not known yet"),
    ],
)
def test_progress_messages_give_percent_and_time_left_once_there_is_a_rate(first, then, message):
    state = then or first
    left = time_left(first, then) if then else TimeLeft().seconds_left(first)
    prefix = "CCR: pulling 6.0 MB" if state.bytes_total == 6_000_000 else "CCR: pulling 1.2 GB"
    assert progress_message(warm_request(), state, left) == f"{prefix} from docker.io, {message}"


def test_a_retried_copy_estimates_from_its_own_first_byte():
    estimate = TimeLeft()
    estimate.seconds_left(progress(10_000_000, 1.0))
    assert estimate.seconds_left(progress(600_000_000, 11.0)) == pytest.approx(10.17, abs=0.01)  # 59 MB/s
    assert estimate.seconds_left(progress(1_000_000, 0.5)) is None  # the copy began again
    assert estimate.seconds_left(progress(11_000_000, 10.5)) == pytest.approx(1189.0, abs=0.01)  # 1 MB/s


def test_no_progress_message_before_the_first_byte_or_after_the_blobs():
    assert progress_message(warm_request(), progress(0, 2.0), None) is None
    assert progress_message(warm_request(), progress(0, 0.0, bytes_total=0), None) is None
    assert progress_message(warm_request(), progress(1_200_000_000, 30.0, phase="manifests"), 1.0) is None


def test_progress_events_go_out_at_most_every_progress_interval():
    index, core, clock = PodIndex(), RecordingCore(), Clock()
    index.record(PodRef.of(pod("a")), frozenset(), [job_key(warm_request())])
    events = WarmEvents(
        core, index.pods_for, interval=300, pods_per_image=5, instance="test", progress_interval=10, clock=clock
    ).start()
    for second in range(31):  # a copy reporting every second for 30 s
        clock.now = 1000.0 + second
        events.progress(warm_request(), progress(40_000_000 * (second + 1), second + 1.0))
    events.stop()
    posted = [(body["reason"], body["message"]) for _, body in core.events]
    assert [reason for reason, _ in posted] == [PROGRESS] * 4  # at 0, 10, 20 and 30 s
    assert posted[0][1] == "CCR: pulling 1.2 GB from docker.io, 3% done, time left not known yet"  # no rate yet
    assert posted[1][1] == "CCR: pulling 1.2 GB from docker.io, 36% done, about 20 s left"  # 40 MB/s, 760 MB to go
    assert posted[-1][1] == "CCR: pulling 1.2 GB from docker.io, 100% done, a few seconds left"


def test_a_warm_the_front_refused_for_the_storage_budget_says_so_first():
    refusal = budget_refusal(9_000, 2_000, 10_000)
    answer = error_for_status(
        507, {}, error_body("DENIED", refusal), "GET blob sha256:ab", endpoint="https://front:5000", repository="up/a"
    )
    try:
        try:
            raise answer
        except InsufficientStorage as err:
            raise CopyError("front:5000/up/a@sha256:ab", "copy blob sha256:ab (2000 bytes)", err) from err
    except CopyError as err:
        failed, failure = job(JobState.FAILED, error=str(err)), err
    failed.failure = failure
    assert not failure.retryable  # retention frees room at its next run, not in the next seconds
    reason, kind, message = warm_event(failed)
    assert (reason, kind) == (FAILED, "Warning")
    assert f"(1 attempt): the CCR is over its storage budget (retention.maxBytes): {refusal}; it stays" in message
    failed.failure = RegistryServerError("GET blob sha256:ab: registry error, HTTP 500")
    assert "storage budget" not in warm_event(failed)[2]  # any other failure is told as it was
