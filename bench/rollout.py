"""A rollout: every node's Pod admitted at once, then each node pulls what its Pod names, like a kubelet."""

from __future__ import annotations

import contextlib
import functools
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.nodes import ImageNotHeld, NodePull, containerd_pull, image_held, pull_like_kubelet, skopeo_pull
from webhook.testing.containerd import ContainerdNode


@dataclass(frozen=True)
class Rollout:
    """What the nodes did, and the seconds from the first admission until the last node held every blob."""

    nodes: tuple[NodePull, ...]
    seconds: float


class RolloutFailed(Exception):
    """A node never held the image, or holds it incomplete."""


def roll_out(
    nodes: int,
    workdir: Path,
    admit: Callable[[int], str],
    give_up_after: float,
    parallel_layers: bool = True,
    node_client: str = "skopeo",
) -> Rollout:
    """Admit one Pod per node (`admit(i)` returns the image it runs) and have each node pull it (skopeo, its layers
    at once or one at a time; or a containerd daemon of its own); verify every node."""
    directories = [workdir / f"node-{index + 1}" for index in range(nodes)]
    with contextlib.ExitStack() as daemons:
        if node_client.startswith("containerd"):  # started before the clock: a node's runtime is up before its Pods
            snapshotter = node_client.partition("-")[2] or "native"
            runtimes = [daemons.enter_context(ContainerdNode(f"bench-{index + 1}")) for index in range(nodes)]
            pulls_with = [functools.partial(containerd_pull, runtime, snapshotter=snapshotter) for runtime in runtimes]
        else:
            pulls_with = [functools.partial(skopeo_pull, parallel=parallel_layers)] * nodes
        started = time.monotonic()

        def node(index: int) -> NodePull:
            image = admit(index)
            return pull_like_kubelet(
                f"node-{index + 1}", image, directories[index] / "image", started, give_up_after, pull=pulls_with[index]
            )

        with ThreadPoolExecutor(nodes, thread_name_prefix="node") as pool:
            pulls = tuple(pool.map(node, range(nodes)))
    if node_client.startswith("containerd"):  # containerd checked every blob's digest as it committed it
        missing = [pull for pull in pulls if pull.held_at is None]
        if missing:
            raise RolloutFailed(f"{missing[0].node} gave up: {missing[0].attempts[-1].error}")
        return Rollout(pulls, max(pull.held_at or 0.0 for pull in pulls))
    try:
        missing = [pull for pull in pulls if pull.held_at is None]
        if missing:
            raise RolloutFailed(
                f"{', '.join(pull.node for pull in missing)} gave up after {give_up_after:.0f} s: "
                f"{missing[0].attempts[-1].error}"
            )
        for directory in directories:
            try:
                image_held(directory / "image")
            except ImageNotHeld as err:
                raise RolloutFailed(str(err)) from None
        return Rollout(pulls, max(pull.held_at or 0.0 for pull in pulls))
    finally:
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)
