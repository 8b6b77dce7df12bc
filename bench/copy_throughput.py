"""Copy throughput, registry to registry on loopback: ccr-webhook's copy engine against `skopeo copy`.

    ./dev bench copy_throughput [--quick] [--runs N] [--concurrency N]

Each run copies into a fresh destination registry (new storage, new port), so neither tool can reuse or
mount a blob from an earlier run (skopeo remembers blob locations in its blob info cache, ccr-webhook in
its in-process map). Runs of the two tools alternate, who goes first alternating too; the table shows
medians. skopeo runs with --preserve-digests, copying bytes unchanged as ccr-webhook does (otherwise it
would gzip the uncompressed sample layers and change every digest). The copy engine runs in-process, as
in the warmer; skopeo as the command it is. The no-op row copies an image the destination already holds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from webhook.copier.engine import copy_image
from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

MiB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One image to copy: its layer sizes and how many platforms (2 makes an index)."""

    name: str
    layers: tuple[int, ...]
    platforms: int = 1

    @property
    def repository(self) -> str:
        return "bench/" + "-".join(self.name.lower().replace(",", "").split())


FULL = (
    Case("3 layers, 600 MiB", (200 * MiB,) * 3),
    Case("1 layer, 1 GiB", (1024 * MiB,)),
    Case("index, 2 platforms", (128 * MiB, 64 * MiB, 8 * MiB), platforms=2),
)
QUICK = (
    Case("3 layers, 24 MiB", (8 * MiB,) * 3),
    Case("1 layer, 32 MiB", (32 * MiB,)),
    Case("index, 2 platforms", (4 * MiB, 2 * MiB), platforms=2),
)


def client(url: str, connections: int) -> RegistryClient:
    return RegistryClient(url, insecure=True, connect_timeout=2, read_timeout=120, max_connections=connections)


def timed(operation: Callable[[], object]) -> float:
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def ours(source: RegistryServer, case: Case, destination: RegistryServer, concurrency: int) -> float:
    """Seconds for the copy engine, with fresh clients (connections and all)."""
    upstream, target = client(source.url, concurrency), client(destination.url, concurrency)
    try:
        return timed(
            lambda: copy_image(
                upstream, case.repository, "v1", target, case.repository, tag="v1", concurrency=concurrency
            )
        )
    finally:
        upstream.close()
        target.close()


def skopeo(source: RegistryServer, case: Case, destination: RegistryServer) -> float:
    """Seconds for `skopeo copy` of the same image, digests preserved."""
    command = [
        "skopeo",
        "copy",
        "--quiet",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        *(["--all"] if case.platforms > 1 else []),
        f"docker://{source.host}/{case.repository}:v1",
        f"docker://{destination.host}/{case.repository}:v1",
    ]
    return timed(lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL))


def checked_run(copy: Callable[[RegistryServer], float], case: Case, digest: str) -> tuple[float, RegistryServer]:
    """Run `copy` into a fresh destination registry; check the image arrived with its digest."""
    destination = RegistryServer().start()
    seconds = copy(destination)
    arrived = client(destination.url, 1).resolve_digest(case.repository, "v1")
    if arrived != digest:
        destination.cleanup()
        raise SystemExit(f"{case.name}: the destination holds {arrived}, not {digest}")
    return seconds, destination


def measure(source: RegistryServer, case: Case, digest: str, runs: int, concurrency: int) -> dict[str, list[float]]:
    """Interleaved runs of both tools; also the no-op copy of each into a destination that holds the image."""
    tools: dict[str, Callable[[RegistryServer], float]] = {
        "ours": lambda destination: ours(source, case, destination, concurrency),
        "skopeo": lambda destination: skopeo(source, case, destination),
    }
    times: dict[str, list[float]] = {"ours": [], "skopeo": [], "ours no-op": [], "skopeo no-op": []}
    for run in range(runs):
        for name in sorted(tools, reverse=run % 2 == 1):
            seconds, destination = checked_run(tools[name], case, digest)
            times[name].append(seconds)
            times[f"{name} no-op"].append(tools[name](destination))
            destination.cleanup()
    return times


def table(rows: list[tuple[Case, int, dict[str, list[float]]]]) -> str:
    lines = [
        f"{'image':<22} {'MiB':>6} {'ours s':>8} {'skopeo s':>9} {'ratio':>6} {'ours MiB/s':>11} "
        f"{'skopeo MiB/s':>13} {'no-op ours s':>13} {'no-op skopeo s':>15}"
    ]
    for case, size, times in rows:
        median = {name: statistics.median(values) for name, values in times.items()}
        mib = size / MiB
        lines.append(
            f"{case.name:<22} {mib:>6.0f} {median['ours']:>8.2f} {median['skopeo']:>9.2f} "
            f"{median['skopeo'] / median['ours']:>6.2f} {mib / median['ours']:>11.0f} "
            f"{mib / median['skopeo']:>13.0f} {median['ours no-op']:>13.3f} {median['skopeo no-op']:>15.3f}"
        )
    lines.append("ratio = skopeo s / ours s (above 1: ccr-webhook is faster); medians of the runs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small images, for a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool per image (default: 3)")
    parser.add_argument("--concurrency", type=int, default=4, help="blobs the copy engine moves at once (default: 4)")
    args = parser.parse_args(argv)
    rows = []
    with RegistryServer() as source:
        for index, case in enumerate(QUICK if args.quick else FULL):
            upstream = client(source.url, 4)
            pushed = push_sample_image(
                upstream, case.repository, "v1", case.layers, seed=9000 + index, platforms=case.platforms
            )
            upstream.close()
            times = measure(source, case, pushed.digest, args.runs, args.concurrency)
            rows.append((case, pushed.total_bytes, times))
            print(
                f"{case.name}: "
                + ", ".join(f"{name} {' '.join(f'{s:.2f}' for s in values)}" for name, values in times.items()),
                file=sys.stderr,
            )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
