"""The deployment-time results: one record per scenario and image size, kept in a JSON file as they come.

The file is rewritten after every scenario, so an interrupted run keeps what it measured and `--resume`
carries on from there, provided the settings (WAN, nodes, scale) are the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.nodes import NodePull, PullAttempt


@dataclass(frozen=True)
class Settings:
    """What every result of one run shares: the emulated WAN, the cluster, the image scale."""

    rtt_ms: float
    mbit: float
    nodes: int
    scale: float
    ccr_replicas: int = 1  # CCR front replicas, the nodes spread over them
    parallel_layers: bool = False  # nodes fetch an image's layers at once (files saved before this: one at a time)
    node_client: str = "skopeo"  # what pulls on a node: skopeo, or a containerd daemon with ctr


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario on one image: seconds from admission until every node held every blob, and the WAN bytes."""

    scenario: str
    size_mb: int
    image_bytes: int
    seconds: float
    wan_bytes_down: int  # upstream -> cluster, the cost the table counts in copies of the image
    wan_bytes_up: int
    nodes: tuple[NodePull, ...]
    details: dict[str, Any] = field(default_factory=dict)  # per scenario: admission, warm, CCR timings
    load_average: float | None = None  # the machine's 1-minute load average when the scenario started
    finished: str = ""  # when, as local time YYYY-MM-DD HH:MM

    @property
    def wan_copies(self) -> float:
        """How many copies of the image crossed the WAN."""
        return self.wan_bytes_down / self.image_bytes


def result_to_json(result: ScenarioResult) -> dict[str, Any]:
    """A result as plain JSON values."""
    return dataclasses.asdict(result)


def result_from_json(data: dict[str, Any]) -> ScenarioResult:
    """The inverse of result_to_json."""
    nodes = tuple(
        NodePull(
            node["node"], node["image"], tuple(PullAttempt(**attempt) for attempt in node["attempts"]), node["held_at"]
        )
        for node in data["nodes"]
    )
    return ScenarioResult(**{**data, "nodes": nodes})


def load_results(path: Path, settings: Settings) -> list[ScenarioResult]:
    """The results saved at `path` under the same settings; none if the file is missing or was made otherwise."""
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    older = {
        "ccr_replicas": 1,
        "parallel_layers": False,
        "node_client": "skopeo",
    }  # what files saved before these settings existed ran
    if {**older, **saved.get("settings", {})} != dataclasses.asdict(settings):
        return []
    return [result_from_json(item) for item in saved["results"]]


def save_results(path: Path, settings: Settings, results: Iterable[ScenarioResult]) -> None:
    """Write every result to `path` atomically (a crash leaves the previous file whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"settings": dataclasses.asdict(settings), "results": [result_to_json(result) for result in results]}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=1) + "\n")
    os.replace(temporary, path)
