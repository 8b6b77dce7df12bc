"""The warmer's parts with no servers: hints, sightings, the Pod index, Events and their limits, failure reasons."""

from __future__ import annotations

import json

import pytest

from webhook.config import parse_config
from webhook.copier.engine import CopyError, CopyProgress, CopyResult
from webhook.hints import BadHints, Hint, HintClient, HintResult, encode_hints, hints_route, parse_hints
from webhook.http_service import Request
from webhook.policy.decide import WarmRequest
from webhook.policy.reference import parse_image
from webhook.registry.errors import NotFound, RegistryAuthError, RegistryUnavailable
from webhook.registry.resolver import Resolver
from webhook.warmer.events import FAILED, FINISHED, PROGRESS, STARTED, WarmEvents, progress_message, scrub, warm_event
from webhook.warmer.metrics import failure_reason
from webhook.warmer.pods import PodIndex, PodRef, pod_images
from webhook.warmer.queue import JobState, WarmJob, job_key
from webhook.warmer.sightings import Sightings

DIGEST = "sha256:" + "d" * 64
SETTINGS = {
    "ccr": {"registry": "ccr.local"},
    "upstreams": [{"registry": "docker.io"}, {"registry": "ghcr.io", "prefix": "gh"}],
}


def warm_request(image: str = f"docker.io/library/nginx:1.25@{DIGEST}") -> WarmRequest:
    source = parse_image(image)
    return WarmRequest(source, source.with_registry("ccr.local", "docker.io"))


# -- hints ---------------------------------------------------------------------------------------------


def test_hints_round_trip_and_bad_bodies_say_what_is_wrong():
    request = warm_request()
    assert parse_hints(encode_hints([request])) == [Hint(str(request.source), str(request.target))]
    assert parse_hints(b'{"requests": [{"source": "nginx:1"}]}') == [Hint("nginx:1", None)]
    for body, message in [
        (b"{", "not JSON"),
        (b"[]", '{"requests"'),
        (b'{"requests": [{"source": 1}]}', r"requests\[0\]"),
        (json.dumps({"requests": [{"source": "a"}] * 65}).encode(), "at most 64"),
    ]:
        with pytest.raises(BadHints, match=message):
            parse_hints(body)


def test_hints_are_taken_from_loopback_only_and_the_wait_is_capped():
    waits = []
    route = hints_route(lambda hints, wait: waits.append(wait) or [HintResult(h.source, None, "queued") for h in hints])
    body = encode_hints([warm_request()])
    for peer, status in [("10.1.2.3", 403), ("::ffff:192.168.1.1", 403), ("127.0.0.1", 200), ("::1", 200)]:
        assert route(Request("POST", "/hints", {"wait": "600"}, body, peer)).status == status
    assert waits == [30.0, 30.0]
    assert route(Request("POST", "/hints", {"wait": "soon"}, body, "127.0.0.1")).status == 400


def test_a_hint_client_whose_warmer_is_down_drops_and_counts_without_blocking():
    counted: list[tuple[str, int]] = []
    client = HintClient(
        "http://127.0.0.1:9", timeout=0.2, backlog=1, on_result=lambda result, n: counted.append((result, n))
    )
    client.send([warm_request(), warm_request(), warm_request()])  # returns at once; the backlog holds one
    assert client.warm([warm_request()], timeout=0.1) == set()
    assert ("dropped", 1) in counted  # the forced warm
    assert sum(n for result, n in counted if result == "dropped") >= 2  # and what did not fit the backlog


# -- sightings -----------------------------------------------------------------------------------------


class Registry:
    def __init__(self, tags=None, digests=()):
        self.tags, self.digests, self.asked = tags or {}, set(digests), []

    def resolve_digest(self, repository, reference):
        self.asked.append(("resolve", repository, reference))
        if (repository, reference) not in self.tags:
            raise NotFound("manifest", f"{repository}:{reference}")
        return self.tags[repository, reference]

    def has_manifest(self, repository, digest):
        self.asked.append(("has", repository, digest))
        return (repository, digest) in self.digests


class Registries:
    def __init__(self, upstream, ccr):
        self.ccr, self._upstream, self.hosts = ccr, upstream, []

    def upstream(self, registry):
        self.hosts.append(registry)
        return self._upstream


def sightings(policy=None, ccr_digests=()):
    config = parse_config({**SETTINGS, "policy": policy or {}})
    registries = Registries(Registry({("library/nginx", "1.25"): DIGEST}), Registry(digests=ccr_digests))
    return Sightings(config, Resolver(config, registries), timeout=5), registries


def test_sightings_warm_mirrors_of_configured_upstreams_only():
    checker, registries = sightings(ccr_digests=[("gh/org/tool", DIGEST)])
    tag, pinned_ccr, present, forged, bad, missing = checker.check(
        [
            "nginx:1.25",
            f"ccr.local/docker.io/library/redis:7@{DIGEST}",
            f"ghcr.io/org/tool@{DIGEST}",
            f"evil.example.com/x@{DIGEST}",
            "Not An Image",
            "nginx:9",
        ]
    )
    assert tag.wanted and str(tag.request.target) == f"ccr.local/docker.io/library/nginx:1.25@{DIGEST}"
    assert str(pinned_ccr.request.source) == f"docker.io/library/redis:7@{DIGEST}" and pinned_ccr.wanted
    assert present.in_ccr is True and not present.wanted
    assert "not a configured upstream" in forged.problem and not forged.retry_later
    assert bad.problem and not bad.wanted
    assert "cannot resolve" in missing.problem and missing.retry_later
    assert set(registries.hosts) <= {"docker.io", "ghcr.io"}


@pytest.mark.parametrize(
    ("policy", "problem"),
    [({"copy": "none"}, "policy.copy is none"), ({"exclude": ["docker.io/library/*"]}, "excluded")],
)
def test_sightings_respect_copy_none_and_exclude(policy, problem):
    checker, registries = sightings(policy)
    (sighting,) = checker.check(["nginx:1.25"])
    assert problem in sighting.problem and not sighting.wanted and registries.hosts == []


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


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


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


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (progress(540_000_000, 36.0), "CCR: pulling 1.2 GB from docker.io, 45% done, about 45 s left"),
        (progress(120_000_000, 60.0), "CCR: pulling 1.2 GB from docker.io, 10% done, about 9 min left"),
        (progress(1_190_000_000, 20.0), "CCR: pulling 1.2 GB from docker.io, 99% done, a few seconds left"),
        # blobs the CCR held already count as done, not towards the rate: 300 MB in 10 s, 600 MB to go
        (
            progress(600_000_000, 10.0, bytes_copied=300_000_000),
            "CCR: pulling 1.2 GB from docker.io, 50% done, about 20 s left",
        ),
    ],
)
def test_progress_messages_give_percent_and_time_left(state, message):
    assert progress_message(warm_request(), state) == message


def test_no_progress_message_before_the_first_byte_or_after_the_blobs():
    assert progress_message(warm_request(), progress(0, 2.0)) is None
    assert progress_message(warm_request(), progress(0, 0.0, bytes_total=0)) is None
    assert progress_message(warm_request(), progress(1_200_000_000, 30.0, phase="manifests")) is None


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
    assert posted[0][1] == "CCR: pulling 1.2 GB from docker.io, 3% done, about 30 s left"
    assert posted[-1][1] == "CCR: pulling 1.2 GB from docker.io, 100% done, a few seconds left"


# -- metrics -------------------------------------------------------------------------------------------


def copy_error(cause: Exception) -> CopyError:
    try:
        raise CopyError("img", "copy blob", cause) from cause
    except CopyError as err:
        return err


def test_failure_reasons_follow_the_registry_error_behind_a_copy_error():
    assert failure_reason(copy_error(RegistryAuthError("HTTP 401"))) == "auth"
    assert failure_reason(copy_error(RegistryUnavailable("HTTP 503"))) == "unavailable"
    assert failure_reason(NotFound("blob", DIGEST)) == "not-found"
    assert failure_reason(RuntimeError("bug")) == "error"
