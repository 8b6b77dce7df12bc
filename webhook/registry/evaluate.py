"""Evaluate the images of one workload: plan each, gather the registry facts they need at once, decide."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from webhook.config import Config
from webhook.policy.decide import Decision, ImageFacts, Lookup, decide_image, plan_image
from webhook.registry.resolver import Resolver


def evaluate_images(
    images: Sequence[str],
    config: Config,
    resolver: Resolver,
    timeout: float,
    decide: Callable[[Lookup, ImageFacts, Config], Decision] = decide_image,
) -> list[Decision]:
    """One Decision per image, in order, within `timeout` seconds of registry lookups; `decide` as admission does."""
    plans = [plan_image(image, config) for image in images]
    lookups = [plan for plan in plans if isinstance(plan, Lookup)]
    facts = iter(resolver.gather(lookups, timeout) if lookups else ())
    return [decide(plan, next(facts), config) if isinstance(plan, Lookup) else plan for plan in plans]
