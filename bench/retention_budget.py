"""A CCR over its storage budget, and the warmer's scheduled retention bringing it back under in one interval.

Two real registries hold the same generated images (`--images`, each its own layers of `--layer-mib`), with
real tags and build times; the in-memory API server has Pods naming three of them (in use), and Pods that
named three others and were deleted one after the other (recently used, least recent first). Retention's
rules keep every image (`keepNewest` above the count, nothing past `maxUnusedAge`, a `keep` pattern on
`stable`): only a budget can evict. The baseline CCR has no budget, the candidate `maxBytes` = `--budget`
of what it holds. A real ScheduledRetention (the warmer's loop, leader, watching the cluster) runs against
each at once, `retention.interval` apart (60 s, the least the configuration allows), and the script waits
for the first run, then reads each CCR again. It prints bytes before and after, the budget, how long until
under it, what was evicted (least recently used first) and that none of it was in use or kept by a pattern;
then runs the registry's garbage collection on the candidate and shows the disk before and after. Last, how
long one run takes over `--scale` small images, the first time and the next, against the interval.

    ./dev bench retention_budget [--images 10] [--layer-mib 2] [--budget 0.5] [--scale 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from webhook.config import Config, parse_config
from webhook.registry.client import RegistryClient
from webhook.retention.inventory import read_inventory
from webhook.retention.metrics import RetentionMetrics
from webhook.retention.plan import format_bytes, unique_bytes
from webhook.retention.run import Retention
from webhook.retention.schedule import ScheduledRetention
from webhook.retention.usage import UsageTracker
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.processes import REGISTRY_BINARY, RegistryServer
from webhook.testing.sample_image import PushedImage, push_sample_image

MiB = 1024 * 1024
REPOSITORY = "mirror/up/app"
INTERVAL_SECONDS = 60.0  # retention.interval's minimum
IN_USE = (0, 4, 8)
RECENT = (1, 2, 3)  # named by Pods deleted in this order: 3 is the most recently used
SYNC_SECONDS = 10.0


def settings(ccr: RegistryServer, images: int, max_bytes: int | None) -> Config:
    retention: dict[str, object] = {
        "enabled": True,
        "keepNewest": images + 1,
        "maxUnusedAge": "7d",
        "interval": INTERVAL_SECONDS,
        "rules": [{"name": "releases", "repositories": ["mirror/up/**"], "keep": ["stable"]}],
    }
    if max_bytes is not None:
        retention["maxBytes"] = max_bytes
    return parse_config(
        {
            "ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True},
            "upstreams": [{"registry": "up.io", "prefix": "mirror/up"}],
            "retention": retention,
        }
    )


def push(client: RegistryClient, count: int, layer_bytes: int) -> list[PushedImage]:
    """`count` images v0..., built a day apart; the newest is also tagged `stable`."""
    pushed = []
    for n in range(count):
        created = f"2026-01-{n + 1:02d}T00:00:00Z"
        pushed.append(
            push_sample_image(client, REPOSITORY, f"v{n}", [layer_bytes, layer_bytes // 2], n, created=created)
        )
    newest = client.get_manifest(REPOSITORY, pushed[-1].digest)
    client.put_manifest(REPOSITORY, "stable", newest.data, newest.media_type)
    return pushed


def pod(name: str, *images: str) -> dict:
    containers = [{"name": f"c{index}", "image": image} for index, image in enumerate(images)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"containers": containers},
    }


def disk_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {seconds:g} s")
        time.sleep(0.2)


def garbage_collect(server: RegistryServer) -> None:
    """The documented procedure, shortened: nothing writes while it runs (here: the registry is stopped)."""
    server.stop()
    subprocess.run(
        [REGISTRY_BINARY, "garbage-collect", str(server.workdir / "config.yml")],
        capture_output=True,
        check=True,
        timeout=120,
    )
    server.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--layer-mib", type=float, default=2.0)
    parser.add_argument("--budget", type=float, default=0.5, help="the candidate's maxBytes, a share of what it holds")
    parser.add_argument("--scale", type=int, default=200, help="images of the run-time measure (0: skip it)")
    args = parser.parse_args()
    if args.images < 10:
        parser.error("--images must be at least 10 (three in use, three recently used, the rest unused)")
    print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    with LocalAPIServer() as cluster, RegistryServer() as baseline_ccr, RegistryServer() as budget_ccr:
        clients = {
            name: RegistryClient(server.url, insecure=True, connect_timeout=2, read_timeout=60, max_connections=4)
            for name, server in (("baseline", baseline_ccr), ("budget", budget_ccr))
        }
        pushed = {name: push(client, args.images, int(args.layer_mib * MiB)) for name, client in clients.items()}
        held = unique_bytes(read_inventory(clients["budget"], ["mirror/up"]).images)
        budget = int(held * args.budget)
        configs = {
            "baseline": settings(baseline_ccr, args.images, None),
            "budget": settings(budget_ccr, args.images, budget),
        }
        names = {
            n: [f"{server.host}/{REPOSITORY}@{pushed['budget'][n].digest}" for server in (baseline_ccr, budget_ccr)]
            for n in range(args.images)
        }
        for n in IN_USE:
            cluster.create(pod(f"uses-v{n}", *names[n]))
        for n in RECENT:
            cluster.create(pod(f"used-v{n}", *names[n]))
        metrics = {name: RetentionMetrics() for name in clients}
        schedules = {
            name: ScheduledRetention(
                configs[name], cluster.api_client(), clients[name], lambda: True, metrics=metrics[name]
            ).start()
            for name in clients
        }
        started = time.monotonic()
        try:
            for schedule in schedules.values():
                if not schedule.usage.wait_synced(SYNC_SECONDS):
                    raise SystemExit("bench: the cluster was not listed in time")
            for n in RECENT:  # least recently used first
                cluster.delete("Pod", f"used-v{n}", "bench")
                for schedule in schedules.values():
                    wait_for(
                        lambda n=n, schedule=schedule: (
                            (REPOSITORY, pushed["budget"][n].digest) not in schedule.usage.tracker.in_use().digests
                        ),
                        SYNC_SECONDS,
                        f"the deletion of used-v{n} reaching the watch",
                    )
                time.sleep(1.0)
            done = {}
            for name, metric in metrics.items():
                wait_for(
                    lambda metric=metric: metric.registry.get_sample_value("ccr_webhook_storage_bytes"),
                    INTERVAL_SECONDS + 60,
                    f"{name}'s first retention run",
                )
                done[name] = time.monotonic() - started
        finally:
            for schedule in schedules.values():
                schedule.stop()
        print(f"load average after: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
        print(
            f"\n{args.images} images of {format_bytes(pushed['budget'][0].total_bytes)}, 3 in use, 3 recently used, "
            f"retention.interval {INTERVAL_SECONDS:g} s\n"
        )
        print("| CCR | maxBytes | bytes before | bytes after | under budget | first run done after | evicted |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, client in clients.items():
            remaining = read_inventory(client, ["mirror/up"]).images
            left = {image.digest for image in remaining}
            gone = [image for image in pushed[name] if image.digest not in left]
            in_use_gone = [
                image.tag for n, image in enumerate(pushed[name]) if n in IN_USE and image.digest not in left
            ]
            if in_use_gone or pushed[name][-1].digest not in left:
                raise SystemExit(f"bench: {name} evicted what it must keep: {in_use_gone or 'stable'}")
            after = unique_bytes(remaining)
            maximum = configs[name].retention.max_bytes
            under = "-" if maximum is None else ("yes" if after <= maximum else "NO")
            evicted = [f"{image.tag} ({_history(pushed[name].index(image))})" for image in gone]
            print(
                f"| {name} | {format_bytes(maximum) if maximum else 'none'} | {format_bytes(held)} | "
                f"{format_bytes(after)} | {under} | {done[name]:.1f} s | {', '.join(evicted) or 'none'} |"
            )
        before_gc = disk_bytes(budget_ccr.root)
        garbage_collect(budget_ccr)
        after_gc, baseline_disk = disk_bytes(budget_ccr.root), disk_bytes(baseline_ccr.root)
        print(
            f"\ncandidate's disk: {format_bytes(before_gc)} before the registry's garbage collection, "
            f"{format_bytes(after_gc)} after (baseline: {format_bytes(baseline_disk)})"
        )
        for client in clients.values():
            client.close()
    if args.scale:
        measure_run_time(args.scale, args.budget)
        print(f"load average after: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")


def measure_run_time(count: int, share: float) -> None:
    """How long one run takes over `count` small images in 20 repositories, with a budget: the first run (every
    build time read from its config) and the next (build times remembered), against the 60 s interval."""
    with RegistryServer() as ccr:
        client = RegistryClient(ccr.url, insecure=True, connect_timeout=2, read_timeout=60, max_connections=4)
        for n in range(count):
            created = f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}Z"
            push_sample_image(client, f"{REPOSITORY}-{n % 20}", f"1.{n}.0", [1024, 512], n, created=created)
        held = unique_bytes(read_inventory(client, ["mirror/up"]).images)
        config = settings(ccr, count, int(held * share))
        tracker = UsageTracker(config)
        retention = Retention(config, client, tracker, tracker.in_use)
        seconds = []
        for _ in range(2):
            started = time.perf_counter()
            result = retention.run(dry_run=True)
            seconds.append(time.perf_counter() - started)
        client.close()
    print(
        f"\none dry run over {count} images in 20 repositories, {len(result.plan.evictions)} evicted for the budget: "
        f"{seconds[0]:.2f} s the first time (build times read), {seconds[1]:.2f} s the next (remembered); "
        f"interval {INTERVAL_SECONDS:g} s"
    )


def _history(n: int) -> str:
    """What the cluster did with image n: never named since retention started, or named until a moment ago."""
    return f"used, {len(RECENT) - RECENT.index(n)} from last" if n in RECENT else "never named"


if __name__ == "__main__":
    main()
