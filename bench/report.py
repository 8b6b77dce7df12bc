"""The results as the published table plus ours (seconds, saving per scenario), WAN bytes, where the time went."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.published import PUBLISHED, PublishedRow
from bench.results import ScenarioResult, Settings

MB = 1_000_000


def saving(seconds: float, baseline_seconds: float) -> float:
    """The fraction of the baseline's time saved (negative when slower)."""
    return 1 - seconds / baseline_seconds


def _saving_cell(fraction: float | None) -> str:
    """A saving as the table shows it: time less than the baseline is −, more is +."""
    if fraction is None:
        return "—"
    return f"−{fraction * 100:.0f}%" if fraction >= 0 else f"+{-fraction * 100:.0f}%"


def _published(size_mb: int) -> PublishedRow | None:
    return next((row for row in PUBLISHED if row.size_mb == size_mb), None)


def _by_key(results: Sequence[ScenarioResult]) -> dict[tuple[str, int], ScenarioResult]:
    return {(result.scenario, result.size_mb): result for result in results}


def _average(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.fmean(known) if known and len(known) == len(values) else None


def deployment_table(results: Sequence[ScenarioResult], titles: dict[str, str], sizes: Sequence[int]) -> list[str]:
    """The published layout (image, baseline, CCR), then every scenario we ran: seconds and saving vs our baseline."""
    found = _by_key(results)
    ours = [name for name in titles if any((name, size) in found for size in sizes) and name != "baseline"]
    header = ["Image", "Published baseline", "Published CCR", "saving", "Baseline"]
    for name in ours:
        header += [titles[name], "saving"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    columns: dict[str, list[float | None]] = {name: [] for name in ["published", *ours]}
    for size in sizes:
        published = _published(size)
        baseline = found.get(("baseline", size))
        row = [
            f"{size} MB",
            f"{published.baseline_seconds:.0f} s" if published else "—",
            f"{published.ccr_seconds:.0f} s" if published else "—",
            _saving_cell(published.ccr_saving if published else None),
            f"{baseline.seconds:.1f} s" if baseline else "—",
        ]
        columns["published"].append(published.ccr_saving if published else None)
        for name in ours:
            result = found.get((name, size))
            fraction = saving(result.seconds, baseline.seconds) if result and baseline else None
            columns[name].append(fraction)
            row += [f"{result.seconds:.1f} s" if result else "—", _saving_cell(fraction)]
        lines.append("| " + " | ".join(row) + " |")
    average = ["**average saving**", "", "", _saving_cell(_average(columns["published"])), ""]
    for name in ours:
        average += ["", f"**{_saving_cell(_average(columns[name]))}**"]
    lines.append("| " + " | ".join(average) + " |")
    return lines


def wan_table(results: Sequence[ScenarioResult], titles: dict[str, str], sizes: Sequence[int]) -> list[str]:
    """MB that crossed the WAN towards the cluster per scenario, in copies of the image (a warm ahead of time apart)."""
    found = _by_key(results)
    names = [name for name in titles if any((name, size) in found for size in sizes)]
    lines = ["| Image | " + " | ".join(titles[name] for name in names) + " |", "|---|" + "---|" * len(names)]
    for size in sizes:
        cells = []
        for name in names:
            result = found.get((name, size))
            if result is None:
                cells.append("—")
                continue
            cell = f"{result.wan_bytes_down / MB:.0f} MB ({result.wan_copies:.2f}×)"
            warm = result.details.get("warm_wan_bytes_down")
            if warm is not None:
                cell += f" + warm {warm / MB:.0f} MB ({warm / result.image_bytes:.2f}×)"
            cells.append(cell)
        lines.append(f"| {size} MB | " + " | ".join(cells) + " |")
    return lines


def without_backoff_wait(result: ScenarioResult) -> float:
    """The seconds had the nodes that backed off pulled as soon as the CCR held the image (no wait on the schedule)."""
    slowest = max(result.nodes, key=lambda node: node.held_at or 0.0)
    held = result.details.get("ccr_held_at")
    if held is None or len(slowest.attempts) < 2:
        return result.seconds
    return min(result.seconds, held + slowest.attempts[-1].seconds)


def targets_table(
    results: Sequence[ScenarioResult], titles: dict[str, str], sizes: Sequence[int], targets: dict[str, float]
) -> list[str]:
    """Each scenario's average saving against the issue's target, and what the back-off wait cost it."""
    found = _by_key(results)
    lines = [
        "| Scenario | average saving | target | met | without the back-off wait after the CCR held the image |",
        "|---|---|---|---|---|",
    ]
    for name, target in targets.items():
        pairs = [(found.get((name, size)), found.get(("baseline", size))) for size in sizes]
        if not all(result and baseline for result, baseline in pairs):
            continue
        average = statistics.fmean(saving(result.seconds, baseline.seconds) for result, baseline in pairs)
        ideal = statistics.fmean(saving(without_backoff_wait(result), baseline.seconds) for result, baseline in pairs)
        lines.append(
            f"| {titles[name]} | {_saving_cell(average)} | −{target * 100:.0f}% | "
            f"{'yes' if average >= target else 'no'} | {_saving_cell(ideal)} |"
        )
    return lines


def timeline_table(results: Sequence[ScenarioResult], titles: dict[str, str]) -> list[str]:
    """Where the time went: admission, each node's pull attempts, when the CCR held the image, time lost to back-off."""
    lines = [
        "| Scenario | Image | admitted after | pull attempts started at (s) | last pull took | CCR held it at | "
        "back-off wait after that |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        slowest = max(result.nodes, key=lambda node: node.held_at or 0.0)
        admitted = max(node.attempts[0].started for node in result.nodes)
        starts = ", ".join(f"{attempt.started:.1f}" for attempt in slowest.attempts)
        held = result.details.get("ccr_held_at")
        last = slowest.attempts[-1]
        lost = last.started - held if held is not None and len(slowest.attempts) > 1 else None
        lines.append(
            f"| {titles.get(result.scenario, result.scenario)} | {result.size_mb} MB | {admitted:.2f} s | "
            f"{starts} | {last.seconds:.1f} s | {_seconds(held)} | {_seconds(lost)} |"
        )
    return lines


def nodes_table(results: Sequence[ScenarioResult], titles: dict[str, str]) -> list[str]:
    """Per node: when the pull that succeeded started (its time to first byte, within a round trip or two) and
    when the node held the image; the pull retries of all nodes; the front's own time to first byte when it ran."""
    lines = [
        "| Scenario | Image | pull retries | per node: successful pull started at → held at (s) | "
        "front: mean time to first byte, upstream bytes |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        retries = sum(len(node.attempts) - 1 for node in result.nodes)
        per_node = ", ".join(
            f"{node.attempts[-1].started:.1f}→{_seconds(node.held_at).removesuffix(' s')}" for node in result.nodes
        )
        front = "—"
        if "front_upstream_bytes" in result.details:
            details = result.details
            front = (
                f"{details['front_first_byte_mean_seconds'] * 1000:.0f} ms, "
                f"{details['front_upstream_bytes'] / result.image_bytes:.2f}× the image"
            )
        title = titles.get(result.scenario, result.scenario)
        lines.append(f"| {title} | {result.size_mb} MB | {retries} | {per_node} | {front} |")
    return lines


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def measured_note(results: Sequence[ScenarioResult]) -> str:
    """When the results were measured, and how busy the machine was: the range of load averages at their starts."""
    if not results:
        return ""
    loads = [result.load_average for result in results if result.load_average is not None]
    dates = sorted(result.finished for result in results if result.finished)
    when = f"Measured {dates[0]} to {dates[-1]}" if dates else "Measured"
    load = (
        f", 1-minute load average {min(loads):.1f} to {max(loads):.1f} at the scenarios' starts (2 cores)"
        if loads
        else ""
    )
    return f"{when}{load}."


def markdown_report(
    settings: Settings,
    results: Sequence[ScenarioResult],
    titles: dict[str, str],
    sizes: Sequence[int],
    legend: Sequence[str],
    targets: dict[str, float],
) -> str:
    """The whole report: settings, each scenario (`legend`), the deployment-time table, WAN bytes, the timeline."""
    scale = "full size" if settings.scale == 1 else f"images scaled by {settings.scale:g}"
    parts = [
        "# Deployment time on an emulated WAN",
        "",
        f"WAN {settings.rtt_ms:g} ms RTT, {settings.mbit:g} Mbit/s shared by the cluster; {settings.nodes} nodes "
        + (f"spread over {settings.ccr_replicas} CCR front replicas, " if settings.ccr_replicas > 1 else "")
        + (
            "pulling with containerd 1.6 (`ctr images pull --max-concurrent-downloads 3`, as its CRI plugin, through "
            f"a hosts.toml; unpacked by the {settings.node_client.partition('-')[2] or 'native'} snapshotter)"
            if settings.node_client.startswith("containerd")
            else "pulling with skopeo "
            + (
                "(layers in parallel, as node runtimes fetch them)"
                if settings.parallel_layers
                else "(one layer at a time)"
            )
        )
        + f", retried on the kubelet's back-off (10 s doubling to 300 s); {scale}. "
        f"{measured_note(results)}",
        "",
        "Seconds from the Pod's admission until every node holds every blob. A node's pull checks each blob's digest "
        "as it writes it, as containerd does; the benchmark checks every blob of every node again afterwards, off the "
        "clock. Saving = time saved against the baseline of the same source (published against published, ours "
        "against ours).",
        "",
        *legend,
        "",
        *deployment_table(results, titles, sizes),
        "",
        "## Against the targets (average over the sizes run)",
        "",
        *targets_table(results, titles, sizes, targets),
        "",
        "## WAN bytes towards the cluster",
        "",
        *wan_table(results, titles, sizes),
        "",
        "## Where the time went (the slowest node of each run)",
        "",
        *timeline_table(results, titles),
        "",
        "## Every node: time to first byte, pull retries",
        "",
        *nodes_table(results, titles),
        "",
    ]
    return "\n".join(parts)
