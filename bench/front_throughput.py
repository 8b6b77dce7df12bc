"""Pull throughput of held content: straight from the CCR registry against through the CCR front.

    ./dev bench front_throughput [--runs N] [--size MIB]

The image is in the CCR already (the pre-warmed case), so the front only passes it through. Each run
pulls it with `skopeo copy` into a fresh directory on tmpfs, straight from the registry and through the
front, alternating who goes first; the table shows medians and the ratio (the target is at least 0.9).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from webhook.registry.client import RegistryClient
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

MiB = 1024 * 1024
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


def pull_seconds(host: str, reference: str) -> float:
    """Seconds `skopeo copy` takes to pull `host/reference` into a fresh directory."""
    directory = tempfile.mkdtemp(dir=SCRATCH)
    try:
        started = time.monotonic()
        subprocess.run(
            ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{host}/{reference}", f"dir:{directory}/i"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        return time.monotonic() - started
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512, help="image size in MiB, in 4 layers (default 512)")
    args = parser.parse_args()
    with RegistryServer() as ccr:
        client = RegistryClient(ccr.url, insecure=True, connect_timeout=2, read_timeout=60, max_connections=8)
        pushed = push_sample_image(client, "up/bench/app", "v1", [args.size * MiB // 4] * 4, seed=7)
        settings = {
            "ccr": {"registry": "ccr.bench", "endpoint": ccr.url, "insecure": True},
            "upstreams": [{"registry": "upstream.bench", "endpoint": "http://127.0.0.1:9", "insecure": True}],
        }
        front = LocalFront(settings).start()
        try:
            timings: dict[str, list[float]] = {"registry": [], "front": []}
            for run in range(args.runs):
                order = [("registry", ccr.host), ("front", front.host)]
                for name, host in order if run % 2 == 0 else reversed(order):
                    timings[name].append(pull_seconds(host, f"up/bench/app@{pushed.digest}"))
        finally:
            front.cleanup()
    rate = {name: pushed.total_bytes / MiB / statistics.median(values) for name, values in timings.items()}
    print(f"{'path':<10} {'median s':>9} {'MiB/s':>8}   runs: {args.runs}, image {pushed.total_bytes / MiB:.0f} MiB")
    for name, values in timings.items():
        print(f"{name:<10} {statistics.median(values):>9.2f} {rate[name]:>8.0f}")
    print(f"front / registry throughput: {rate['front'] / rate['registry']:.2f}")


if __name__ == "__main__":
    main()
