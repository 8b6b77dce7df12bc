"""Admission's side of warming: hint the warmer about images the CCR lacks, or wait for them under `copy: force`.

Hints go only for reviews that are not `dryRun` (the webhook declares sideEffects NoneOnDryRun), from
enforce namespaces, and from dry-run namespaces when `warmer.warmDryRunNamespaces` opts them in. They
are sent in the background: admission never waits on them. Under `copy: force`, an enforce review
waits for its warms within what is left of its deadline; an image whose copy finished in time is
rewritten to the CCR in that same answer (the resolver is told, so the next Pod is a cache hit), and
one that did not is answered as `copy: delayed` would, while its copy goes on.
"""

from __future__ import annotations

from collections.abc import Sequence

from webhook.config import Config, CopyMode
from webhook.hints import HintClient
from webhook.policy.decide import Action, Decision, ImageFacts, Lookup, WarmRequest, decide_image, plan_image
from webhook.policy.review import AdmissionRequest, AdmissionResult, Mode, warm_requests
from webhook.registry.resolver import Resolver


class Warming:
    """Hints `hints` (None: no warmer configured) and marks finished warms in `resolver`."""

    def __init__(self, config: Config, resolver: Resolver, hints: HintClient | None) -> None:
        self._config = config
        self._resolver = resolver
        self._hints = hints
        self._force = config.policy.copy is CopyMode.FORCE

    def ensure_warm(
        self, request: AdmissionRequest, mode: Mode, decisions: Sequence[Decision], timeout: float
    ) -> list[Decision]:
        """Under copy: force, wait up to `timeout` for an enforce review's warms; redecide the images now in the CCR."""
        wanted = warm_requests(decisions)
        denied = any(decision.action is Action.DENY for decision in decisions)  # refused anyway: nothing to wait for
        if (
            not self._force
            or mode is not Mode.ENFORCE
            or request.dry_run
            or denied
            or not wanted
            or self._hints is None
        ):
            return list(decisions)
        done = self._hints.warm(wanted, timeout)
        for warm in done:
            if warm.target.digest:
                self._resolver.mark_in_ccr(warm.target.repository, warm.target.digest)
        return [self._in_ccr(decision) if decision.warm in done else decision for decision in decisions]

    def hint(self, request: AdmissionRequest, mode: Mode, result: AdmissionResult) -> None:
        """Tell the warmer, in the background, about the images of an answered review that the CCR lacks."""
        if self._hints is None or request.dry_run or (self._force and mode is Mode.ENFORCE):
            return  # a dryRun review has no side effects; under force the warmer has heard already
        if mode is Mode.ENFORCE:
            wanted: Sequence[WarmRequest] = result.warm_requests
        elif self._config.warmer.warm_dry_run_namespaces:
            wanted = warm_requests(result.decisions)
        else:
            return
        if wanted:
            self._hints.send(wanted)

    def _in_ccr(self, decision: Decision) -> Decision:
        """The decision for an image whose warm has just finished: the CCR holds its digest now."""
        plan = plan_image(decision.image, self._config)
        if not isinstance(plan, Lookup) or decision.warm is None:
            return decision
        return decide_image(plan, ImageFacts(digest=decision.warm.source.digest, in_ccr=True), self._config)
