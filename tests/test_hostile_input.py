"""Hostile input, generated: image strings and AdmissionReview documents of every odd shape, against the pure
admission functions (many examples; test_hostile_server.py sends fewer to the real TLS server).

Every answer is an AdmissionReview for the review's uid, or a 4xx with a reason; never a 5xx. Every patch
applies with jsonpatch and touches image fields and the webhook's own annotation only. How many inputs
were tried is counted and printed at the end of the run.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.support import tally
from tests.support.hostile import check_answer, examples, image_strings, reviews
from webhook.config import parse_config
from webhook.policy.decide import Action, Decision, ImageFacts, Lookup, decide_image, plan_image
from webhook.policy.reference import InvalidImageReference, parse_image
from webhook.policy.review import BadReview, Mode, build_result, encode_review, parse_review

CCR = "ccr.local:5000"
D1 = "sha256:" + "1" * 64
CONFIG = parse_config(
    {"ccr": {"registry": CCR}, "upstreams": [{"registry": "registry.example"}, {"registry": "docker.io"}]}
)
PURE = examples(2000)
REVIEWS = examples(1000)  # a review is dearer to generate than a string


def decide_all(images: list[str]) -> list[Decision]:
    """The policy's verdicts with the registries' answers made up: the digest known, the CCR holding every other one."""
    plans = [plan_image(image, CONFIG) for image in images]
    return [
        decide_image(plan, ImageFacts(digest=D1, in_ccr=len(plan.image) % 2 == 0), CONFIG)
        if isinstance(plan, Lookup)
        else plan
        for plan in plans
    ]


# -- the pure functions -----------------------------------------------------------------------------------


@PURE
@given(image_strings(["registry.example", CCR]))
def test_any_image_string_gets_a_verdict_and_only_configured_upstreams_are_looked_up(image):
    tally.count("hostile image strings (pure)")
    try:
        parse_image(image)
    except InvalidImageReference as err:
        refused: InvalidImageReference | None = err
    else:
        refused = None
    assert refused is None or refused.reason
    plan = plan_image(image, CONFIG)
    if isinstance(plan, Lookup):
        assert plan.upstream in CONFIG.upstreams
        plan = decide_image(plan, ImageFacts(digest=D1, in_ccr=True), CONFIG)
    assert isinstance(plan, Decision) and plan.reason
    if plan.new_image is not None:  # reinvocation: what the webhook wrote is left alone the next time
        again = plan_image(plan.new_image, CONFIG)
        assert isinstance(again, Decision) and again.action is Action.LEAVE


@REVIEWS
@given(reviews(["registry.example", CCR]), st.sampled_from(Mode))
def test_any_review_document_is_refused_with_a_reason_or_answered_with_a_clean_patch(review, mode):
    tally.count("hostile AdmissionReview documents (pure)")
    try:
        request = parse_review(review)
    except BadReview as err:
        refused = err
    else:
        refused = None
    if refused is not None:
        assert refused.reason
        return
    result = build_result(request, decide_all([image.image for image in request.images]), mode)
    check_answer(review, json.loads(encode_review(result)))


# -- the real server --------------------------------------------------------------------------------------
