"""The scenarios: how the cluster gets the image, each run as one rollout and measured the same way."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.images import BenchImage
from bench.results import ScenarioResult
from bench.rollout import roll_out
from bench.testbed import Upstream


@dataclass(frozen=True)
class Scenario:
    """One way to deploy: its name on the command line and its title in the table."""

    name: str
    title: str
    description: str


SCENARIOS = (
    Scenario("baseline", "Baseline", "no ccr-webhook: every node pulls the image from the upstream, across the WAN."),
)


def run_scenario(scenario: Scenario, image: BenchImage, upstream: Upstream, nodes: int, workdir: Path,
                 give_up_after: float) -> ScenarioResult:
    """Roll `image` out to `nodes` nodes as `scenario` says; count the bytes that crossed the WAN meanwhile."""
    load = os.getloadavg()[0]
    upstream.wan.reset_counters()
    reference = image.reference(upstream.registry)
    rollout = roll_out(nodes, workdir, lambda index: reference, give_up_after)
    return ScenarioResult(scenario.name, image.size_mb, image.total_bytes, rollout.seconds,
                          upstream.wan.down.bytes_sent, upstream.wan.up.bytes_sent, rollout.nodes,
                          load_average=load, finished=time.strftime("%Y-%m-%d %H:%M"))
