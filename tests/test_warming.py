"""Admission's side of warming, in process: which reviews hint the warmer, and what copy: force rewrites."""

from __future__ import annotations

import pytest

from webhook.admission.warming import Warming
from webhook.config import parse_config
from webhook.policy.decide import Action, ImageFacts, Lookup, decide_image, plan_image
from webhook.policy.review import Mode, build_result, parse_review
from webhook.registry.resolver import Resolver

CCR = "ccr.local:5000"
D1 = "sha256:" + "1" * 64
IMAGE = "docker.io/library/nginx:1.25"


class Hints:
    """A hint client that records what it is given; `done` says which forced warms finish in time."""

    def __init__(self, done=True):
        self.sent, self.waited, self.done = [], [], done

    def send(self, requests):
        self.sent.extend(requests)

    def warm(self, requests, timeout):
        self.waited.append((tuple(requests), timeout))
        return set(requests) if self.done else set()


def config(**policy):
    policy.setdefault("swap", "exists")  # a cold image is pinned upstream and hinted
    return parse_config(
        {
            "ccr": {"registry": CCR},
            "upstreams": [{"registry": "docker.io"}],
            "policy": policy,
            "warmer": {"warmDryRunNamespaces": policy.pop("opt_in", False)},
        }
    )


def review(dry_run=False, image=IMAGE):
    return parse_review(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "operation": "CREATE",
                "dryRun": dry_run,
                "object": {
                    "kind": "Pod",
                    "metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "c", "image": image}]},
                },
            },
        }
    )


def admit(settings, hints, mode=Mode.ENFORCE, dry_run=False, image=IMAGE):
    """Decide a one-image review as app.py does, with the CCR lacking the image; the result."""
    resolver = Resolver(settings, registries=None)
    warming = Warming(settings, resolver, hints)
    request = review(dry_run, image)
    plans = [plan_image(image.image, settings) for image in request.images]
    decisions = [
        decide_image(p, ImageFacts(digest=D1, in_ccr=False), settings) if isinstance(p, Lookup) else p for p in plans
    ]
    decisions = warming.ensure_warm(request, mode, decisions, timeout=1.5)
    result = build_result(request, decisions, mode)
    warming.hint(request, mode, result)
    return result, resolver


def test_enforce_reviews_hint_in_the_background_and_dry_run_reviews_do_not():
    hints = Hints()
    result, _ = admit(config(), hints)
    assert result.decisions[0].action is Action.PIN and [str(r.source) for r in hints.sent] == [f"{IMAGE}@{D1}"]
    admit(config(), hints, dry_run=True)
    assert len(hints.sent) == 1 and hints.waited == []


@pytest.mark.parametrize(("opt_in", "hinted"), [(False, 0), (True, 1)])
def test_dry_run_namespaces_hint_only_when_opted_in(opt_in, hinted):
    hints = Hints()
    admit(config(opt_in=opt_in), hints, mode=Mode.DRY_RUN)
    admit(config(opt_in=opt_in), hints, mode=Mode.DRY_RUN, dry_run=True)  # never for a dryRun review
    assert len(hints.sent) == hinted


def test_copy_none_hints_nothing():
    hints = Hints()
    result, _ = admit(config(copy="none"), hints)
    assert result.decisions[0].action is Action.PIN and hints.sent == [] and hints.waited == []


def test_copy_force_rewrites_to_the_ccr_when_the_warm_finished_in_time():
    hints = Hints(done=True)
    result, resolver = admit(config(copy="force"), hints)
    decision = result.decisions[0]
    assert decision.action is Action.REWRITE and decision.new_image == f"{CCR}/docker.io/library/nginx:1.25@{D1}"
    assert hints.sent == [] and hints.waited[0][1] == 1.5  # waited once, not hinted twice
    pinned = plan_image(f"{IMAGE}@{D1}", config(copy="force"))
    assert resolver.gather([pinned], timeout=0)[0].in_ccr is True  # the next Pod is answered from the cache


def test_copy_force_answers_as_delayed_when_the_warm_did_not_finish():
    hints = Hints(done=False)
    result, _ = admit(config(copy="force"), hints)
    assert result.decisions[0].action is Action.PIN and result.warm_requests and len(hints.waited) == 1


def test_copy_force_does_not_wait_for_a_pod_that_is_denied_anyway():
    hints = Hints()
    admit(config(copy="force"), hints, image="nginx:latest")
    assert hints.waited == []
