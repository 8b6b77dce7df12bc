"""The scenarios: how the cluster gets the image, each run as one rollout and measured the same way."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ccr import CcrWatch, ccr_name, prewarm
from bench.cluster import CcrCluster
from bench.images import BenchImage
from bench.results import ScenarioResult
from bench.rollout import Rollout, roll_out
from bench.testbed import Upstream


@dataclass(frozen=True)
class Scenario:
    """One way to deploy: its name on the command line, its title in the table, and ccr-webhook's part in it."""

    name: str
    title: str
    description: str
    policy: dict[str, Any] | None = None  # ccr-webhook's policy section; None: no ccr-webhook at all
    prewarm: bool = False  # `ccr-webhook warm` before the rollout (its time and bytes are reported apart)
    deadline_seconds: float = 2.0  # webhook.deadlineSeconds: how long admission may take
    target: float | None = None  # the average saving against the baseline that issue #5 (#11 for the front) asks for
    front: bool = False  # nodes pull through the CCR front (ccr.registry), the warmer reads through it too


EXISTS_POLICY = {"swap": "exists", "copy": "delayed"}  # the default before the front
FIRST_ROLLOUT_TARGET = 0.55
FRONT_TARGET = 0.60  # issue #11, at 3 nodes (0.85 at 10)
PREWARMED_TARGET = 0.85
SCENARIOS = (
    Scenario("baseline", "Baseline", "no ccr-webhook: every node pulls the image from the upstream, across the WAN."),
    Scenario(
        "front",
        "CCR front",
        "the code's default policy (swap: always, copy: delayed; the warmer reads through the front by itself) with "
        "the CCR front: admission "
        "rewrites to the CCR at once, the nodes pull through the front, which fetches each blob from upstream once "
        "and streams it to every node (and to the warm) as it arrives.",
        {},
        target=FRONT_TARGET,
        front=True,
    ),
    Scenario(
        "front-no-warm",
        "CCR front, no warm",
        "as CCR front, but copy: none: the front alone fetches the image, as the nodes pull it; no warm reads "
        "through it and uploads the image into the CCR a second time, and there are no progress Events.",
        {"copy": "none"},
        front=True,
    ),
    Scenario(
        "ccr-default",
        "CCR exists",
        "the default before the front (swap: exists, copy: delayed). The CCR lacks the image, so admission pins it "
        "upstream and hints the warmer: the nodes pull across the WAN while the warm copies it too.",
        EXISTS_POLICY,
        target=FIRST_ROLLOUT_TARGET,
    ),
    Scenario(
        "ccr-always",
        "CCR always",
        "swap: always, copy: delayed. Admission rewrites to the CCR at once and hints the warmer; the nodes find "
        "nothing yet and back off (10 s, 20 s, 40 s, ...) until the warm is done.",
        {"swap": "always", "copy": "delayed"},
        target=FIRST_ROLLOUT_TARGET,
    ),
    Scenario(
        "ccr-force",
        "CCR force",
        "swap: always, copy: force, webhook.deadlineSeconds 29 (the API server allows 30). Admission waits for "
        "the warm for up to 90% of its deadline: an image copied by then is pulled from the CCR at once; a larger "
        "one is rewritten anyway and the nodes back off from there.",
        {"swap": "always", "copy": "force"},
        deadline_seconds=29.0,
        target=FIRST_ROLLOUT_TARGET,
    ),
    Scenario(
        "prewarmed",
        "CCR pre-warmed",
        "`ccr-webhook warm IMAGE` before the rollout (its time and WAN bytes are shown apart), then the default "
        "policy finds the image in the CCR and the nodes pull it through the front.",
        {},
        prewarm=True,
        target=PREWARMED_TARGET,
        front=True,
    ),
)


def run_scenario(
    scenario: Scenario,
    image: BenchImage,
    upstream: Upstream,
    nodes: int,
    workdir: Path,
    give_up_after: float,
    replicas: int = 1,
    parallel_layers: bool = True,
    node_client: str = "skopeo",
) -> ScenarioResult:
    """Roll `image` out to `nodes` nodes as `scenario` says (through `replicas` front replicas, nodes spread over
    them round robin; each node fetching its layers at once or one at a time); count the bytes that crossed the
    WAN meanwhile."""
    load = os.getloadavg()[0]
    reference = image.reference(upstream.registry)
    if scenario.policy is None:
        upstream.wan.reset_counters()
        return _result(
            scenario,
            image,
            upstream,
            roll_out(nodes, workdir, lambda index: reference, give_up_after, parallel_layers, node_client),
            {},
            load,
        )
    with CcrCluster(
        upstream.registry,
        scenario.policy,
        scenario.deadline_seconds,
        front=scenario.front,
        replicas=replicas if scenario.front else 1,
    ) as cluster:
        details: dict[str, Any] = {}
        if scenario.prewarm:
            upstream.wan.reset_counters()
            details["warm_seconds"] = prewarm(cluster.settings, reference)
            details["warm_wan_bytes_down"] = upstream.wan.down.bytes_sent
        upstream.wan.reset_counters()
        target = ccr_name(cluster.settings, reference, image.pushed.digest)
        with CcrWatch(cluster.ccr, target, time.monotonic()) as watch:
            rollout = roll_out(
                nodes,
                workdir,
                lambda index: cluster.node_image(cluster.admit(f"app-{index + 1}", reference), index),
                give_up_after,
                parallel_layers,
                node_client,
            )
            # a warm still running when the nodes are done crosses the WAN too: wait for it before counting
            details["ccr_held_at"] = watch.wait(give_up_after)
        details.update(cluster.front_figures())
        return _result(scenario, image, upstream, rollout, details, load)


def _result(
    scenario: Scenario,
    image: BenchImage,
    upstream: Upstream,
    rollout: Rollout,
    details: dict[str, Any],
    load_average: float,
) -> ScenarioResult:
    return ScenarioResult(
        scenario.name,
        image.size_mb,
        image.total_bytes,
        rollout.seconds,
        upstream.wan.down.bytes_sent,
        upstream.wan.up.bytes_sent,
        rollout.nodes,
        details,
        load_average,
        time.strftime("%Y-%m-%d %H:%M"),
    )
