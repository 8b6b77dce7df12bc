"""Table tests for the pure policy: every verdict from plain strings, configuration and facts."""

import pytest

from webhook.config import parse_config
from webhook.policy.decide import (
    Action,
    Decision,
    ImageFacts,
    Lookup,
    NotMirrored,
    WarmRequest,
    decide_image,
    plan_image,
    upstream_source,
    warm_request_for,
)
from webhook.policy.reference import InvalidImageReference

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
CCR = "ccr.local:5000"


def make_config(**policy):
    return parse_config(
        {
            "ccr": {"registry": CCR},
            "upstreams": [{"registry": "docker.io"}, {"registry": "quay.io", "prefix": "mirror/quay"}],
            "policy": policy,
        }
    )


def verdict(image, facts=None, **policy):
    """Plan, and decide with `facts` when the plan needs registry facts."""
    config = make_config(**policy)
    plan = plan_image(image, config)
    if isinstance(plan, Lookup):
        assert facts is not None, f"{image} needed facts {plan}"
        return decide_image(plan, facts, config)
    return plan


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("nginx", "no tag means latest"),
        ("nginx:latest", "the tag latest is not allowed"),
        (f"nginx:latest@{D1}", "the tag latest is not allowed"),
        ("registry.unlisted.io/app", "no tag means latest"),
        (f"{CCR}/docker.io/library/nginx", "no tag means latest"),
        ("Bad/Image", "lowercase"),
        ("registry.io:5000", "host:port with no repository"),
    ],
)
def test_denied_before_any_registry_is_asked(image, reason):
    decision = verdict(image)
    assert decision.action is Action.DENY
    assert reason in decision.reason


def test_latest_allowed_when_the_rule_is_off():
    plan = plan_image("nginx", make_config(rejectLatest=False))
    assert isinstance(plan, Lookup) and plan.need_digest


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (f"{CCR}/docker.io/library/nginx:1.25@{D1}", "already points at the CCR"),
        (f"{CCR}/other/thing:1", "outside every upstream prefix"),
        ("registry.unlisted.io/app:1", "not a configured upstream"),
        ("169.254.169.254/app:1", "not a configured upstream"),
    ],
)
def test_left_alone_without_asking(image, reason):
    decision = verdict(image)
    assert decision == Decision(Action.LEAVE, image, decision.reason)
    assert reason in decision.reason


@pytest.mark.parametrize("pattern", ["docker.io/library/nginx", "docker.io/library/*", "*:1.25"])
def test_exclude_globs_over_the_normalized_image(pattern):
    decision = verdict("nginx:1.25", exclude=[pattern])
    assert decision.action is Action.LEAVE and pattern in decision.reason


def test_exclude_does_not_lift_the_latest_rule():
    assert verdict("nginx", exclude=["docker.io/*"]).action is Action.DENY


def test_lookup_for_an_upstream_tag_asks_digest_and_ccr():
    plan = plan_image("quay.io/org/app:2", make_config())
    assert isinstance(plan, Lookup)
    assert (plan.need_digest, plan.need_ccr, plan.upstream.prefix) == (True, True, "mirror/quay")


def test_rewrite_to_the_ccr_when_it_holds_the_digest():
    decision = verdict("nginx:1.25", ImageFacts(digest=D1, in_ccr=True))
    assert decision.action is Action.REWRITE
    assert decision.new_image == f"{CCR}/docker.io/library/nginx:1.25@{D1}"
    assert decision.warm is None


def test_rewrite_uses_the_upstream_prefix():
    decision = verdict("quay.io/org/app:2", ImageFacts(digest=D1, in_ccr=True))
    assert decision.new_image == f"{CCR}/mirror/quay/org/app:2@{D1}"


def test_pin_upstream_and_warm_when_the_ccr_lacks_it():
    decision = verdict("nginx:1.25", ImageFacts(digest=D1, in_ccr=False), swap="exists")
    assert decision.action is Action.PIN
    assert decision.new_image == f"docker.io/library/nginx:1.25@{D1}"
    assert isinstance(decision.warm, WarmRequest)
    assert str(decision.warm.source) == f"docker.io/library/nginx:1.25@{D1}"
    assert str(decision.warm.target) == f"{CCR}/docker.io/library/nginx:1.25@{D1}"
    assert "due to be warmed into the CCR" in decision.reason
    assert decision.cold == "not in the CCR yet: pulled from docker.io this time; due to be warmed into the CCR"


def test_ccr_silent_pins_upstream_and_still_warms():
    decision = verdict("nginx:1.25", ImageFacts(digest=D1, in_ccr=None), swap="exists")
    assert decision.action is Action.PIN and "did not answer" in decision.reason
    assert decision.warm is not None and decision.cold is None  # not known to be cold: no warning


def test_copy_none_never_warms():
    decision = verdict("nginx:1.25", ImageFacts(digest=D1, in_ccr=False), copy="none", swap="exists")
    assert decision.action is Action.PIN and decision.warm is None


def test_swap_always_is_the_default_and_rewrites_a_cold_image_with_a_warning_and_a_warm():
    config = make_config()
    plan = plan_image("nginx:1.25", config)
    assert isinstance(plan, Lookup) and plan.need_digest and plan.need_ccr
    decision = decide_image(plan, ImageFacts(digest=D1, in_ccr=False), config)
    assert decision.action is Action.REWRITE and decision.reason == "policy.swap is always"
    assert decision.new_image == f"{CCR}/docker.io/library/nginx:1.25@{D1}"
    assert decision.warm is not None
    assert decision.cold and "the CCR front fetches it from docker.io once" in decision.cold


@pytest.mark.parametrize(
    ("in_ccr", "warmed", "warned"), [(True, False, False), (None, True, False), (False, True, True)]
)
def test_swap_always_warms_and_warns_only_what_the_ccr_may_lack(in_ccr, warmed, warned):
    decision = verdict("nginx:1.25", ImageFacts(digest=D1, in_ccr=in_ccr))
    assert decision.action is Action.REWRITE and decision.new_image == f"{CCR}/docker.io/library/nginx:1.25@{D1}"
    assert (decision.warm is not None, decision.cold is not None) == (warmed, warned)


def test_swap_always_with_copy_none_does_not_ask_the_ccr():
    plan = plan_image("nginx:1.25", make_config(copy="none"))
    assert isinstance(plan, Lookup) and plan.need_digest and not plan.need_ccr


def test_swap_always_with_a_digest_asks_only_the_ccr():
    config = make_config(swap="always")
    plan = plan_image(f"nginx@{D1}", config)
    assert isinstance(plan, Lookup) and not plan.need_digest and plan.need_ccr
    decision = decide_image(plan, ImageFacts(), config)
    assert decision.action is Action.REWRITE
    assert decision.new_image == f"{CCR}/docker.io/library/nginx@{D1}"


def test_digest_only_reference_asks_only_the_ccr():
    plan = plan_image(f"nginx@{D1}", make_config())
    assert isinstance(plan, Lookup) and not plan.need_digest and plan.need_ccr
    decision = decide_image(plan, ImageFacts(in_ccr=True), make_config())
    assert decision.new_image == f"{CCR}/docker.io/library/nginx@{D1}"


def test_already_pinned_upstream_image_the_ccr_lacks_is_left_and_warmed():
    decision = verdict(f"docker.io/library/nginx:1.25@{D1}", ImageFacts(in_ccr=False), swap="exists")
    assert decision.action is Action.LEAVE and decision.new_image is None
    assert decision.warm is not None


@pytest.mark.parametrize(("on_error", "action"), [("allow", Action.UNPINNED), ("deny", Action.DENY)])
def test_resolve_error_follows_on_resolve_error(on_error, action):
    decision = verdict("nginx:1.25", ImageFacts(resolve_error="upstream timed out"), onResolveError=on_error)
    assert decision.action is action
    assert "upstream timed out" in decision.reason and decision.new_image is None


def test_pin_digest_off_rewrites_by_tag_when_the_ccr_holds_it():
    decision = verdict("nginx:1.25", ImageFacts(digest=D1, in_ccr=True), pinDigest=False)
    assert decision.new_image == f"{CCR}/docker.io/library/nginx:1.25"


def test_pin_digest_off_leaves_upstream_image_when_the_ccr_lacks_it():
    decision = verdict("nginx:1.25", ImageFacts(digest=D1, in_ccr=False), pinDigest=False, swap="exists")
    assert decision.action is Action.LEAVE and decision.warm is not None


def test_unpinned_ccr_image_is_mapped_back_upstream_and_pinned():
    decision = verdict(f"{CCR}/docker.io/library/nginx:1.25", ImageFacts(digest=D2, in_ccr=True))
    assert decision.action is Action.REWRITE
    assert decision.new_image == f"{CCR}/docker.io/library/nginx:1.25@{D2}"


def test_rewriting_is_idempotent():
    first = verdict("nginx:1.25", ImageFacts(digest=D1, in_ccr=True))
    again = verdict(first.new_image)
    assert again.action is Action.LEAVE


@pytest.mark.parametrize("image", ["nginx:1.25", f"{CCR}/docker.io/library/nginx:1.25", "quay.io/org/app:2"])
def test_warm_request_for_is_the_request_admission_makes(image):
    config = make_config()
    source = upstream_source(image, config)
    plan = plan_image(image, config)
    assert isinstance(plan, Lookup) and source == plan.source
    admission = decide_image(plan, ImageFacts(digest=D1, in_ccr=False), config).warm
    assert warm_request_for(source, D1, config) == admission


def test_warm_request_for_names_the_ccr_copy_under_the_upstream_prefix():
    request = warm_request_for(upstream_source("quay.io/org/app:2", make_config()), D2, make_config())
    assert str(request.source) == f"quay.io/org/app:2@{D2}"
    assert str(request.target) == f"{CCR}/mirror/quay/org/app:2@{D2}"


@pytest.mark.parametrize(
    ("image", "error"),
    [
        ("registry.unlisted.io/app:1", NotMirrored),
        (f"{CCR}/other/thing:1", NotMirrored),
        ("Bad/Image", InvalidImageReference),
    ],
)
def test_upstream_source_refuses_images_no_upstream_serves(image, error):
    with pytest.raises(error):
        upstream_source(image, make_config())
