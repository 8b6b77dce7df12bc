"""Real containerd nodes pulling through the CCR front, from the CCR, and through the node agent's fallback.

    ./dev bench node_failover [--runs N] [--layer-mib A,B,...]

The scene of tests/test_node_containerd.py (an upstream, the CCR registry, the front over TLS, the node agent
and its fallback, one containerd daemon pulling with `ctr images pull --max-concurrent-downloads 3 --hosts-dir
<what the agent wrote>`), timed: the agent's first pass, a cold pull through the front, a held pull, and, with
every CCR Pod down, the failover from the refused front to the fallback beside the fallback alone. Numbers for
docs/decisions/0006-node-side.md; medians of N runs, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import tests.test_node_containerd as scene_module
from tests.test_node_containerd import REGISTRY, NodeScene
from webhook.node.hosts import HOSTS_FILE
from webhook.testing.processes import RegistryServer

MB = 1_000_000


def _timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _median(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms ({', '.join(f'{v * 1000:.0f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--layer-mb", default="8,4,2,1", help="layer sizes in MB (default 8,4,2,1)")
    args = parser.parse_args()
    scene_module.LAYERS[:] = [int(float(size) * MB) for size in args.layer_mb.split(",")]
    with RegistryServer() as upstream, RegistryServer() as ccr, tempfile.TemporaryDirectory() as work:
        scene = NodeScene(upstream, ccr, Path(work), "apps/bench")
        try:
            scene.start_front()
            first_pass = _timed(scene.agent.sync)
            cold, held, failover, fallback_alone = [], [], [], []
            for run in range(args.runs):
                image = scene.push(seed=9000 + run, repository=f"apps/bench-{run}")
                scene.node.forget()
                cold.append(_timed(lambda: scene.pull(image)))  # noqa: B023 (called at once)
                time.sleep(2)  # the front's commit
                scene.node.forget()
                held.append(_timed(lambda: scene.pull(image)))  # noqa: B023
            assert scene.front is not None
            scene.front.cleanup()
            scene.front = None
            scene.ccr.stop()
            scene.agent.sync()
            alone = Path(work) / "fallback-alone"
            (alone / REGISTRY).mkdir(parents=True)
            fallback = scene.settings["nodes"]["fallbackListen"]
            (alone / REGISTRY / HOSTS_FILE).write_text(f'[host."http://{fallback}"]\n  capabilities = ["pull"]\n')
            for run in range(args.runs):
                image = scene.push(seed=9100 + run, repository=f"apps/bench-down-{run}")
                scene.node.forget()
                failover.append(_timed(lambda: scene.pull(image)))  # noqa: B023
                scene.node.forget()
                fallback_alone.append(_timed(lambda: scene.node.pull(scene.reference(image), alone)))  # noqa: B023
            size = sum(scene_module.LAYERS) / MB
            print(f"image: {size:.0f} MB in {len(scene_module.LAYERS)} tar layers; load average {os.getloadavg()}")
            print(f"agent's first pass (write, TLS dial):      {first_pass * 1000:.0f} ms")
            print(f"cold, through the front:                   {_median(cold)}")
            print(f"held, from the CCR through the front:      {_median(held)}")
            print(f"CCR down: front refused, then fallback:    {_median(failover)}")
            print(f"the fallback alone in hosts.toml:          {_median(fallback_alone)}")
        finally:
            scene.close()


if __name__ == "__main__":
    main()
