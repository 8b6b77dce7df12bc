"""Deployment time on an emulated WAN: the published CCR table reproduced, and ccr-webhook's scenarios beside it.

    ./dev bench deploy_time [--scale 0.05] [--rtt-ms 110] [--mbit 200] [--nodes 3] [--replicas 1]
                            [--sizes 133,670,1210,2230] [--scenarios baseline,...] [--layers-one-at-a-time]
                            [--node-client skopeo|containerd] [--resume]

An upstream registry sits behind an emulated WAN (webhook/testing/wan.py). For each published image size, every
scenario rolls the image out to N nodes; each node pulls with skopeo like a kubelet (back-off 10 s doubling
to 300 s), its layers at once as node runtimes fetch them (--layers-one-at-a-time: one after the other), or
with --node-client containerd a real containerd daemon per node pulls with `ctr images pull
--max-concurrent-downloads 3` (its CRI plugin's default) through a hosts.toml, the images' layers then tar
archives it can unpack.
Each result is printed as it comes and saved (JSON, a markdown table, a PNG plot) under bench/results/
for full-size runs, bench/out/results-scale-<scale>/ otherwise. --resume keeps the results already saved
under the same settings and runs only the missing ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.images import push_bench_images
from bench.plot import plot_deployment_times
from bench.published import PUBLISHED_SIZES_MB
from bench.report import markdown_report, saving
from bench.results import ScenarioResult, Settings, load_results, save_results
from bench.scenarios import SCENARIOS, run_scenario
from bench.testbed import Upstream

BENCH = Path(__file__).resolve().parent
WORKDIR = BENCH / "out" / "deploy_time"
TITLES = {scenario.name: scenario.title for scenario in SCENARIOS}
TARGETS = {scenario.name: scenario.target for scenario in SCENARIOS if scenario.target is not None}
LEGEND = [f"- **{scenario.title}** (`{scenario.name}`): {scenario.description}" for scenario in SCENARIOS]


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="image sizes times this (0.05 for a quick run)")
    parser.add_argument("--rtt-ms", type=float, default=110.0, help="WAN round-trip time (default 110)")
    parser.add_argument("--mbit", type=float, default=200.0, help="WAN bandwidth shared by the cluster (default 200)")
    parser.add_argument("--nodes", type=int, default=3, help="nodes pulling the image (default 3)")
    parser.add_argument(
        "--replicas", type=int, default=1, help="CCR front replicas, peered, the nodes spread over them (default 1)"
    )
    parser.add_argument("--sizes", default=",".join(map(str, PUBLISHED_SIZES_MB)), help="published sizes to run, in MB")
    parser.add_argument("--scenarios", default=",".join(TITLES), help=f"scenarios to run (of {', '.join(TITLES)})")
    parser.add_argument("--resume", action="store_true", help="keep saved results of the same settings; run the rest")
    parser.add_argument("--give-up-after", type=float, default=1800.0, help="seconds before a node stops retrying")
    parser.add_argument(
        "--layers-one-at-a-time",
        action="store_true",
        help="nodes fetch one layer at a time (skopeo's dir: layout) instead of all at once as node runtimes do",
    )
    parser.add_argument(
        "--node-client",
        choices=("skopeo", "containerd", "containerd-overlayfs"),
        default="skopeo",
        help="what pulls on each node: skopeo, or a containerd daemon of its own (root; Debian's containerd) "
        "unpacking with the native snapshotter (copies, mounts nothing), or overlayfs (the CRI default; mounts)",
    )
    parser.add_argument("--results", type=Path, help="where to write the results (default: see above)")
    args = parser.parse_args()
    args.sizes = [int(size) for size in args.sizes.split(",")]
    args.scenarios = [name for name in args.scenarios.split(",") if name]
    unknown = sorted(set(args.scenarios) - set(TITLES))
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(TITLES)}")
    if args.results is None:
        args.results = BENCH / "results" if args.scale == 1 else BENCH / "out" / f"results-scale-{args.scale:g}"
        if args.node_client != "skopeo":
            args.results = args.results / args.node_client
    return args


def summary_line(result: ScenarioResult, results: list[ScenarioResult]) -> str:
    """One printed line per result, as it comes."""
    baseline = next((r for r in results if r.scenario == "baseline" and r.size_mb == result.size_mb), None)
    versus = ""
    if baseline and result is not baseline:
        fraction = saving(result.seconds, baseline.seconds)
        versus = f"  {abs(fraction) * 100:.0f}% {'less' if fraction >= 0 else 'more'} time than the baseline"
    return (
        f"{result.scenario:<14} {result.size_mb:>5} MB  {result.seconds:7.1f} s  "
        f"WAN {result.wan_bytes_down / 1e6:8.1f} MB ({result.wan_copies:.2f} copies){versus}"
    )


def write_outputs(directory: Path, settings: Settings, results: list[ScenarioResult], sizes: list[int]) -> None:
    """The JSON, the markdown table and the plot, rewritten after every result."""
    save_results(directory / "deploy_time.json", settings, results)
    (directory / "deploy_time.md").write_text(markdown_report(settings, results, TITLES, sizes, LEGEND, TARGETS))
    plot_deployment_times(directory / "deploy_time.png", settings, results, TITLES)


def main() -> int:
    """Run every requested scenario on every requested size, saving as it goes; 1 if any scenario failed."""
    args = parse_args()
    settings = Settings(
        rtt_ms=args.rtt_ms,
        mbit=args.mbit,
        nodes=args.nodes,
        scale=args.scale,
        ccr_replicas=args.replicas,
        parallel_layers=not args.layers_one_at_a_time,
        node_client=args.node_client,
    )
    results = load_results(args.results / "deploy_time.json", settings) if args.resume else []
    done = {(result.scenario, result.size_mb) for result in results}
    failed = 0
    print(
        f"WAN: {args.rtt_ms:g} ms RTT, {args.mbit:g} Mbit/s shared; {args.nodes} nodes; scale {args.scale:g}; "
        f"results in {args.results}",
        flush=True,
    )
    with Upstream(WORKDIR / "upstream", args.rtt_ms, args.mbit) as upstream:
        print("pushing the images to the upstream (layers already there are kept)", flush=True)
        images = push_bench_images(
            upstream.direct_client(), args.sizes, args.scale, tar_layers=args.node_client != "skopeo"
        )
        for image in images:
            for scenario in (s for s in SCENARIOS if s.name in args.scenarios):
                if (scenario.name, image.size_mb) in done:
                    continue
                try:
                    result = run_scenario(
                        scenario,
                        image,
                        upstream,
                        args.nodes,
                        WORKDIR / "nodes",
                        args.give_up_after,
                        args.replicas,
                        settings.parallel_layers,
                        settings.node_client,
                    )
                except Exception as error:  # one failed scenario must not cost the others; --resume runs it again
                    print(f"{scenario.name:<14} {image.size_mb:>5} MB  FAILED: {error}", flush=True)
                    failed += 1
                    continue
                results.append(result)
                print(summary_line(result, results), flush=True)
                write_outputs(args.results, settings, results, args.sizes)
    print(f"results: {args.results / 'deploy_time.md'}" + (f"; {failed} scenarios failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
