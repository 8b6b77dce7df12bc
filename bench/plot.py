"""The deployment-time plot: seconds against image size, a line per scenario, published ones dashed (full size)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.published import PUBLISHED
from bench.results import ScenarioResult, Settings


def plot_deployment_times(
    path: Path, settings: Settings, results: Sequence[ScenarioResult], titles: dict[str, str]
) -> None:
    """Draw every scenario's seconds against the (published) image size into a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 5.5), dpi=120)
    if settings.scale == 1:  # the published seconds are for full-size images only
        sizes = [row.size_mb for row in PUBLISHED]
        axes.plot(
            sizes, [row.baseline_seconds for row in PUBLISHED], "k--", marker="s", alpha=0.5, label="published baseline"
        )
        axes.plot(sizes, [row.ccr_seconds for row in PUBLISHED], "k:", marker="s", alpha=0.5, label="published CCR")
    for name, title in titles.items():
        points = sorted((result.size_mb, result.seconds) for result in results if result.scenario == name)
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=title)
    scale = "" if settings.scale == 1 else f", images ×{settings.scale:g}"
    axes.set_title(
        f"Deployment time, {settings.nodes} nodes, WAN {settings.rtt_ms:g} ms RTT / {settings.mbit:g} Mbit/s{scale}"
    )
    axes.set_xlabel("image size (MB, as published)")
    axes.set_ylabel("seconds until every node holds the image")
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)
