"""The admission policy as pure functions over plain data: no I/O, no clock, no globals.

Deciding one image takes two steps so the registries are asked only what matters, all at once:
`plan_image` settles every image it can from the string and the configuration alone, and says which
facts it needs for the rest (a `Lookup`); once the resolver has gathered those `ImageFacts`,
`decide_image` gives the verdict.
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass

from webhook.config import Config, CopyMode, OnResolveError, SwapMode, UpstreamConfig, VerifyRule
from webhook.errors import CCRWebhookError
from webhook.policy.reference import ImageReference, InvalidImageReference, parse_image
from webhook.policy.signatures import Verdict

HELD_REASON = "already points at the CCR, pinned to a digest"


class Action(str, enum.Enum):
    """What admission does with one image."""

    LEAVE = "leave"  # nothing to change
    REWRITE = "rewrite"  # point it at the CCR (pinned when pinDigest)
    PIN = "pin"  # pin it to the upstream digest; the CCR does not hold it (yet)
    UNPINNED = "unpinned"  # the digest could not be learned; admitted as written (onResolveError: allow)
    DENY = "deny"  # refuse the Pod


@dataclass(frozen=True, slots=True)
class WarmRequest:
    """Copy `source` (an upstream image pinned to its digest) into the CCR as `target`."""

    source: ImageReference
    target: ImageReference


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict for one image, with a reason a person can read."""

    action: Action
    image: str
    reason: str
    new_image: str | None = None
    warm: WarmRequest | None = None
    cold: str | None = None  # the CCR said it lacks the image: what the Pod's author is warned of
    warn: bool = False  # admitted, but the API server shows the reason as a warning (UNPINNED always is)


@dataclass(frozen=True, slots=True)
class Lookup:
    """An image whose verdict needs registry facts: its digest upstream and/or whether the CCR holds it."""

    image: str
    upstream: UpstreamConfig
    source: ImageReference
    need_digest: bool
    need_ccr: bool
    verify: VerifyRule | None = None  # a signature by one of its keys over the digest is required
    held: bool = False  # the image already names the CCR, pinned: only its signature is in question


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the registries said about one image. None means nobody asked, or nobody answered in time."""

    digest: str | None = None
    resolve_error: str | None = None
    in_ccr: bool | None = None
    # The digest the CCR's copy of the tag (`<ccr>/<prefix>/<repository>:<tag>`) points at, asked only when the
    # upstream could not be (down, 429, 5xx, no answer in time): the CCR tags only what was verified upstream.
    ccr_digest: str | None = None
    upstream_unavailable: bool = False  # the upstream could not be asked, as opposed to saying no (404, 401)
    tag_missing: bool = False  # the upstream said no such tag or repository (404): no Pod could pull it
    signature: Verdict | None = None  # the signature check of the digest, when the lookup's rule asked for one


def plan_image(image: str, config: Config) -> Decision | Lookup:
    """Settle `image` from the string and the configuration, or say which registry facts decide it."""
    policy = config.policy
    try:
        ref = parse_image(image)
    except InvalidImageReference as err:
        return Decision(Action.DENY, image, err.reason)
    if ref.registry == config.ccr.registry:
        source = _upstream_form_of_ccr_image(ref, config)
        if ref.digest is not None:
            rule, upstream = verify_rule_for(source, config), config.upstream_for(source.registry)
            if rule is None or upstream is None:
                return Decision(Action.LEAVE, image, HELD_REASON)
            return Lookup(image, upstream, source, need_digest=False, need_ccr=False, verify=rule, held=True)
    else:
        source = ref
    if policy.reject_latest and source.implies_latest:
        return Decision(Action.DENY, image, _latest_reason(source))
    pattern = excluded_by(source, config)
    if pattern is not None:
        return Decision(Action.LEAVE, image, f"excluded by policy.exclude pattern {pattern!r}")
    upstream = config.upstream_for(source.registry)
    rule = verify_rule_for(source, config)
    if upstream is None and rule is not None:
        return Decision(
            Action.DENY,
            image,
            f"policy.verify requires a signature, but registry {source.registry} is not a configured upstream, "
            "so its signatures cannot be checked",
        )
    if upstream is None:
        if ref.registry == config.ccr.registry:
            return Decision(Action.LEAVE, image, "points at the CCR outside every upstream prefix; left as written")
        return Decision(Action.LEAVE, image, f"registry {ref.registry} is not a configured upstream; not contacted")
    need_digest = source.digest is None and (policy.pin_digest or policy.swap is SwapMode.EXISTS)
    # swap: always asks too unless nothing is copied: a held image needs no warm, a cold one gets a warning
    need_ccr = policy.swap is SwapMode.EXISTS or policy.copy is not CopyMode.NONE
    lookup = Lookup(image, upstream, source, need_digest, need_ccr, rule)
    if not need_digest and not need_ccr and rule is None:
        return decide_image(lookup, ImageFacts(), config)
    return lookup


def decide_image(lookup: Lookup, facts: ImageFacts, config: Config) -> Decision:
    """The verdict for an image that needed registry facts, given what the registries said."""
    policy = config.policy
    image, source = lookup.image, lookup.source
    digest = source.digest or facts.digest
    if lookup.verify is not None:  # the digest admitted: upstream's, or the CCR's copy of the tag when upstream is down
        refused = _unverified(source, digest or facts.ccr_digest, facts)
        if refused is not None:
            return Decision(Action.DENY, image, refused)
        if lookup.held:
            return Decision(Action.LEAVE, image, f"{HELD_REASON}; {_signed(facts)}")
    if digest is None and lookup.need_digest:
        why = facts.resolve_error or "no answer"
        if facts.ccr_digest is not None:
            held = source.with_digest(facts.ccr_digest) if policy.pin_digest else source
            reason = (
                f"cannot resolve {source} upstream ({why}); pinned to {facts.ccr_digest}, "
                "what the CCR's copy of this tag holds"
            )
            return _changed(
                Action.REWRITE,
                image,
                str(held.with_registry(config.ccr.registry, lookup.upstream.prefix)),
                reason,
                None,
                warn=True,
            )
        if policy.on_resolve_error is OnResolveError.DENY:
            return Decision(
                Action.DENY, image, f"cannot resolve {source} to a digest ({why}); policy.onResolveError is deny"
            )
        return Decision(Action.UNPINNED, image, f"cannot resolve {source} to a digest ({why}); admitted unpinned")
    pinned = source.with_digest(digest) if digest else source
    in_ccr = pinned.with_registry(config.ccr.registry, lookup.upstream.prefix)
    target = in_ccr if policy.pin_digest else source.with_registry(config.ccr.registry, lookup.upstream.prefix)
    warm = WarmRequest(pinned, in_ccr) if policy.copy is not CopyMode.NONE and facts.in_ccr is not True else None
    if policy.swap is SwapMode.ALWAYS or facts.in_ccr is True:
        reason = "the CCR holds this digest" if facts.in_ccr else "policy.swap is always"
        cold = _cold_through_front(source) if facts.in_ccr is False else None
        return _changed(Action.REWRITE, image, str(target), reason, warm, cold)
    why = "the CCR does not hold this digest yet" if facts.in_ccr is False else "the CCR did not answer in time"
    warm_note = "; due to be warmed into the CCR" if warm else ""
    cold = f"not in the CCR yet: pulled from {source.registry} this time{warm_note}" if facts.in_ccr is False else None
    if policy.pin_digest:
        return _changed(Action.PIN, image, str(pinned), f"{why}; pinned upstream{warm_note}", warm, cold)
    return Decision(Action.LEAVE, image, f"{why}; left upstream{warm_note}", warm=warm, cold=cold)


class NotMirrored(CCRWebhookError):
    """An image that no configured upstream serves, so the CCR does not mirror it."""


def upstream_source(image: str, config: Config) -> ImageReference:
    """The upstream image `image` names, or mirrors when it is a CCR name (mapped back through its prefix).

    Raises InvalidImageReference for a malformed image, NotMirrored when no configured upstream serves it.
    """
    ref = parse_image(image)
    source = _upstream_form_of_ccr_image(ref, config) if ref.registry == config.ccr.registry else ref
    _mirroring_upstream(source, config, image)
    return source


def warm_request_for(source: ImageReference, digest: str, config: Config) -> WarmRequest:
    """The warm request admission makes for upstream `source` at `digest`.

    Its target is `<ccr>/<prefix>/<repository>:<tag>@<digest>`.
    """
    upstream = _mirroring_upstream(source, config, str(source))
    pinned = source.with_digest(digest)
    return WarmRequest(pinned, pinned.with_registry(config.ccr.registry, upstream.prefix))


def _mirroring_upstream(source: ImageReference, config: Config, image: str) -> UpstreamConfig:
    """The configured upstream serving `source`; NotMirrored (naming `image`) when there is none."""
    upstream = config.upstream_for(source.registry)
    if upstream is None:
        raise NotMirrored(f"{image}: registry {source.registry} is not a configured upstream; it is not mirrored")
    return upstream


def excluded_by(source: ImageReference, config: Config) -> str | None:
    """The policy.exclude pattern that matches upstream image `source`, or None: excluded images are left alone."""
    return _matching(source, config.policy.exclude)


def _matching(source: ImageReference, patterns: tuple[str, ...]) -> str | None:
    """The first glob matching `source` written in full or as its name without tag or digest."""
    if not patterns:
        return None
    text, name = str(source), source.name
    for pattern in patterns:
        if fnmatch.fnmatchcase(text, pattern) or fnmatch.fnmatchcase(name, pattern):
            return pattern
    return None


def _changed(
    action: Action,
    image: str,
    new_image: str,
    reason: str,
    warm: WarmRequest | None,
    cold: str | None = None,
    warn: bool = False,
) -> Decision:
    """A decision that changes the image, or LEAVE when the new form is what the Pod already says."""
    if new_image == image:
        return Decision(Action.LEAVE, image, f"already in the wanted form ({reason})", warm=warm, cold=cold, warn=warn)
    return Decision(action, image, reason, new_image=new_image, warm=warm, cold=cold, warn=warn)


def verify_rule_for(source: ImageReference, config: Config) -> VerifyRule | None:
    """The first policy.verify rule whose globs match upstream image `source`, or None: no signature is required."""
    for rule in config.policy.verify:
        if _matching(source, rule.images) is not None:
            return rule
    return None


def _unverified(source: ImageReference, digest: str | None, facts: ImageFacts) -> str | None:
    """Why `source` at `digest` may not be admitted under policy.verify, or None when its signature is valid."""
    if digest is None:
        why = facts.resolve_error or "no answer"
        return f"policy.verify requires a signature, but {source} could not be resolved to a digest ({why})"
    verdict = facts.signature
    if verdict is None:
        return f"policy.verify: the signatures of {source.name}@{digest} could not be checked in time"
    if not verdict.valid:
        return f"policy.verify: {source.name}@{digest} has no valid signature: {verdict.reason}"
    return None


def _signed(facts: ImageFacts) -> str:
    return facts.signature.reason if facts.signature is not None else "signed"


def _cold_through_front(source: ImageReference) -> str:
    """The warning for an image rewritten to a CCR that lacks it: the first pull waits on one fetch from upstream."""
    return (
        f"not in the CCR yet: the CCR front fetches it from {source.registry} once and streams it to the nodes "
        "as it arrives; `kubectl describe pod` shows the progress and the time left"
    )


def _latest_reason(ref: ImageReference) -> str:
    if ref.tag == "latest":
        return "the tag latest is not allowed; use a version tag or a digest"
    return "no tag means latest, which is not allowed; use a version tag or a digest"


def _upstream_form_of_ccr_image(ref: ImageReference, config: Config) -> ImageReference:
    """Map `<ccr>/<prefix>/<repository>` back to the upstream image it mirrors (itself when no prefix fits)."""
    for upstream in config.upstreams:
        if ref.repository.startswith(upstream.prefix + "/"):
            return ImageReference(upstream.registry, ref.repository[len(upstream.prefix) + 1 :], ref.tag, ref.digest)
    return ref
