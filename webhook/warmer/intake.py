"""Where warm jobs come from: hints from the webhook, and the Pods the watch sees.

Both go through the same check (`Sightings`: mirrored, not excluded, resolved, missing from the CCR)
before anything is queued, and the queue makes many sightings of one image one copy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from webhook.hints import Hint, HintResult
from webhook.policy.reference import InvalidImageReference, parse_image
from webhook.warmer.pods import PodIndex, PodRef, pod_images
from webhook.warmer.queue import JobState, WarmJob, WarmQueue, job_key
from webhook.warmer.sightings import Sighting, Sightings

log = logging.getLogger("webhook.warmer.intake")


class Intake:
    """Turns hints and Pods into submissions to `queue`; `on_hint(accepted)` counts each hint taken or refused."""

    def __init__(
        self,
        sightings: Sightings,
        queue: WarmQueue,
        index: PodIndex,
        on_hint: Callable[[bool], None] = lambda accepted: None,
    ) -> None:
        self._sightings = sightings
        self._queue = queue
        self._index = index
        self._on_hint = on_hint

    def hinted(self, hints: Sequence[Hint], wait: float) -> list[HintResult]:
        """Check and queue each hint; with `wait`, answer once each is done or failed, or `wait` seconds passed."""
        deadline = time.monotonic() + wait
        answers: list[tuple[HintResult, WarmJob | None]] = []
        for hint, sighting in zip(hints, self._sightings.check([hint.source for hint in hints]), strict=True):
            problem = sighting.problem or _target_mismatch(hint, sighting)
            self._on_hint(problem is None)
            if problem is not None or sighting.request is None:
                log.warning("hint refused: %s", problem)
                answers.append((HintResult(hint.source, hint.target, "rejected", problem), None))
            else:
                job = self._queue.submit(sighting.request) if sighting.wanted else None
                answers.append((HintResult(hint.source, str(sighting.request.target), "present"), job))
        for _, job in answers:
            if job is not None:
                self._queue.wait(job.request, max(0.0, deadline - time.monotonic()))
        return [_with_state(result, job) for result, job in answers]

    def pods_seen(self, pods: Sequence[dict[str, Any]], complete: bool) -> None:
        """Queue the images of `pods` the CCR lacks; a `complete` listing rechecks all and forgets other Pods."""
        refs = [PodRef.of(pod) for pod in pods]
        if complete:
            self._index.retain(refs)
        images_of = {ref: pod_images(pod) for ref, pod in zip(refs, pods, strict=True)}
        todo = {
            ref: images if complete else self._index.unseen_images(ref, images) for ref, images in images_of.items()
        }
        distinct = sorted(set().union(*todo.values()))
        checked = dict(zip(distinct, self._sightings.check(distinct), strict=True)) if distinct else {}
        for ref, images in images_of.items():
            sightings = [checked[image] for image in todo[ref]]
            unresolved = {sighting.image for sighting in sightings if sighting.retry_later}  # looked at again next time
            self._index.record(ref, images - unresolved, [job_key(s.request) for s in sightings if s.request])
            for sighting in sightings:
                if sighting.wanted and sighting.request is not None:
                    self._queue.submit(sighting.request)

    def pod_deleted(self, pod: dict[str, Any]) -> None:
        """Forget a Pod that is gone."""
        self._index.forget(PodRef.of(pod))


def _target_mismatch(hint: Hint, sighting: Sighting) -> str | None:
    """Why the hint's target is not where this warmer would copy the image, or None when it agrees."""
    if hint.target is None or sighting.request is None:
        return None
    expected = sighting.request.target
    try:
        named = parse_image(hint.target)
    except InvalidImageReference as err:
        return str(err)
    if named.name != expected.name or named.digest not in (None, expected.digest):
        return f"{hint.source}: the hint's target {hint.target} is not {expected}, where this warmer copies it"
    return None


def _with_state(result: HintResult, job: WarmJob | None) -> HintResult:
    """`result` with the state its job has now (queued, running, done, failed and why); as it is without a job."""
    if job is None:
        return result
    return HintResult(
        result.source, result.target, job.state.value, job.error if job.state is JobState.FAILED else None
    )
