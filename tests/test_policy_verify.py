"""policy.verify: which images need a signature, how the configuration reads keys, and the verdicts admission gives."""

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from webhook.config import ConfigError, parse_config
from webhook.policy.decide import Action, ImageFacts, Lookup, decide_image, plan_image
from webhook.policy.signatures import Failure, Verdict
from webhook.testing.cosign import new_key, public_pem

D1 = "sha256:" + "1" * 64
CCR = "ccr.local:5000"
PEM = public_pem(new_key())
P224 = public_pem(ec.generate_private_key(ec.SECP224R1()))
SIGNED = Verdict(True, "signed (simple signing, key sha256:abc)")
UNSIGNED = Verdict(False, f"no signature found for {D1}", Failure.NO_SIGNATURE)
DOWN = ImageFacts(resolve_error="HTTP 503", upstream_unavailable=True, ccr_digest=D1)


def make_config(rules=None, **policy):
    rules = rules if rules is not None else [{"images": ["docker.io/acme/*"], "keys": [PEM]}]
    return parse_config(
        {
            "ccr": {"registry": CCR},
            "upstreams": [{"registry": "docker.io"}],
            "policy": {"verify": rules, **policy},
        }
    )


@pytest.mark.parametrize(
    ("image", "verified"),
    [
        ("acme/app:1.0", True),
        (f"acme/app@{D1}", True),
        (f"{CCR}/docker.io/acme/app:1.0", True),
        (f"{CCR}/docker.io/acme/app@{D1}", True),
        ("other/app:1.0", False),
    ],
)
def test_which_images_need_a_signature(image, verified):
    plan = plan_image(image, make_config())
    if not verified:
        assert not isinstance(plan, Lookup) or plan.verify is None
        return
    assert isinstance(plan, Lookup) and plan.verify is not None
    assert plan.verify.keys == (PEM,)


def test_a_pinned_image_with_nothing_else_to_ask_still_asks_for_its_signature():
    plan = plan_image(f"acme/app@{D1}", make_config(copy="none", swap="always"))
    assert isinstance(plan, Lookup) and not plan.need_digest and not plan.need_ccr and plan.verify is not None


@pytest.mark.parametrize(
    ("facts", "action", "words"),
    [
        (ImageFacts(digest=D1, in_ccr=True, signature=SIGNED), Action.REWRITE, "the CCR holds this digest"),
        (ImageFacts(digest=D1, in_ccr=True, signature=UNSIGNED), Action.DENY, f"docker.io/acme/app@{D1} has no valid"),
        (ImageFacts(digest=D1, in_ccr=True), Action.DENY, "could not be checked in time"),
        (ImageFacts(resolve_error="HTTP 503"), Action.DENY, "could not be resolved to a digest (HTTP 503)"),
        # upstream down: the CCR's copy of the tag pins it, and that copy's signature is what counts
        (replace(DOWN, signature=SIGNED), Action.REWRITE, "what the CCR's copy of this tag holds"),
        (replace(DOWN, signature=UNSIGNED), Action.DENY, f"docker.io/acme/app@{D1} has no valid signature"),
        (DOWN, Action.DENY, "could not be checked in time"),
    ],
)
def test_verdicts_with_the_signature_facts(facts, action, words):
    config = make_config()
    plan = plan_image("acme/app:1.0", config)
    assert isinstance(plan, Lookup)
    decision = decide_image(plan, facts, config)
    assert decision.action is action
    assert words in decision.reason


def test_a_denial_names_the_digest_and_why():
    config = make_config()
    plan = plan_image("acme/app:1.0", config)
    wrong = Verdict(False, "not signed by a configured key (sha256:0123), or the signed payload was altered")
    decision = decide_image(plan, ImageFacts(digest=D1, signature=wrong), config)
    assert decision.reason == (
        f"policy.verify: docker.io/acme/app@{D1} has no valid signature: not signed by a configured key "
        "(sha256:0123), or the signed payload was altered"
    )


def test_an_image_already_in_the_ccr_form_is_left_alone_only_when_signed():
    config = make_config()
    image = f"{CCR}/docker.io/acme/app@{D1}"
    plan = plan_image(image, config)
    assert isinstance(plan, Lookup) and plan.held
    assert decide_image(plan, ImageFacts(signature=SIGNED), config).action is Action.LEAVE
    assert decide_image(plan, ImageFacts(signature=UNSIGNED), config).action is Action.DENY


def test_a_registry_that_is_no_upstream_cannot_be_verified_so_is_denied():
    config = make_config([{"images": ["ghcr.io/*"], "keys": [PEM]}])
    decision = plan_image("ghcr.io/acme/app:1.0", config)
    assert decision.action is Action.DENY and "not a configured upstream" in decision.reason


def test_an_excluded_image_is_left_alone_before_verification():
    decision = plan_image("acme/app:1.0", make_config(exclude=["docker.io/acme/*"]))
    assert decision.action is Action.LEAVE


def test_keys_are_read_from_files(tmp_path):
    path = tmp_path / "cosign.pub"
    path.write_text(PEM)
    config = make_config([{"images": ["*"], "keys": [str(path)]}])
    assert config.policy.verify[0].keys == (PEM,)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"images": ["*"], "keys": ["/nonexistent/cosign.pub"]}, "policy.verify[0].keys: cannot read public key file"),
        ({"images": ["*"], "keys": ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]}, "inline PEM"),
        ({"images": ["*"], "keys": []}, "policy.verify[0].keys: must list at least one"),
        ({"images": ["*"], "keys": [P224]}, "policy.verify[0].keys: the inline PEM: ECDSA curve secp224r1 is not"),
        ({"images": [], "keys": [PEM]}, "policy.verify[0].images: must list at least one"),
        ({"keys": [PEM]}, "policy.verify[0].images: is required"),
    ],
)
def test_bad_rules_are_refused_naming_the_key(rule, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_config([rule])
