"""The cost of content trust at admission: `policy.verify` on against off, side by side in one run.

Warm: real registries, the real TLS gunicorn, `wrk` posting bench/admission.py's ~4 KB review (four images,
each signed the way `cosign sign --key` signs) to a webhook without `policy.verify` and to one verifying every
image, each with its caches warm; the server's CPU time per review and the latency, the median of a few runs.

Cold: the upstream behind an emulated WAN (webhook/testing/wan.py, 110 ms RTT by default) and a CCR that
holds nothing, so every tag, every CCR check and every signature lookup is a miss; each round pushes four new
signed images and sends one review of them to each webhook (fresh caches for both): wall time per review,
against the admission deadline.

    ./dev bench verify [--duration 5] [--connections 1,8] [--repeat 3] [--cold 3] [--rtt 110]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.admission import HEADER, IMAGES, WRK_SCRIPT, check_answer, measure, mirror_settings, realistic_review, row
from webhook.registry.client import RegistryClient
from webhook.testing.cosign import PrivateKey, new_key, public_pem, sign_image
from webhook.testing.processes import RegistryServer
from webhook.testing.review_client import send_review
from webhook.testing.sample_image import push_sample_image
from webhook.testing.wan import WanProxy
from webhook.testing.webhook_process import LocalWebhook

DEADLINE_SECONDS = 2.0


def push_signed(client: RegistryClient, prefix: str, seed: int, key: PrivateKey) -> None:
    """The review's four images under `prefix`, each with a classic cosign signature by `key`."""
    for offset, name in enumerate(IMAGES):
        repository = f"{prefix}team/{name}"
        digest = push_sample_image(client, repository, "1.0", layer_sizes=[1024], seed=seed + offset).digest
        sign_image(client, repository, digest, key)


def verify_section(key: PrivateKey) -> dict:
    return {"verify": [{"images": ["*"], "keys": [public_pem(key)]}]}


def warm(args: argparse.Namespace, key: PrivateKey, scratch: Path) -> None:
    with RegistryServer() as upstream, RegistryServer() as ccr:
        for server, prefix in ((upstream, ""), (ccr, "up/")):
            client = RegistryClient(server.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
            push_signed(client, prefix, 0, key)
        review = json.dumps(realistic_review(upstream.host)).encode()
        review_file, script = scratch / "review.json", scratch / "post.lua"
        review_file.write_bytes(review)
        script.write_text(WRK_SCRIPT)
        print(
            f"warm: review of {len(review)} bytes, 4 signed images, all rewritten; 2 gunicorn workers over TLS; "
            f"{os.cpu_count()} CPUs shared with wrk; median of {args.repeat} runs of {args.duration:g} s"
        )
        print(f"{'':>14}{HEADER}")
        for label, policy in (("baseline", {}), ("verify", verify_section(key))):
            with LocalWebhook(mirror_settings(upstream, ccr, policy=policy)) as hook:
                check_answer(hook, review)
                measure(hook, script, review_file, 8, 2)  # every worker's cache warm, code paths hot
                for connections in (int(c) for c in args.connections.split(",")):
                    runs = [measure(hook, script, review_file, connections, args.duration) for _ in range(args.repeat)]
                    print(f"{label:>14}{row(str(connections), runs)}", flush=True)


def cold(args: argparse.Namespace, key: PrivateKey) -> None:
    with RegistryServer() as upstream, RegistryServer() as ccr, WanProxy(upstream.port, rtt_ms=args.rtt) as wan:
        far = f"127.0.0.1:{wan.port}"
        client = RegistryClient(upstream.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
        base = {
            "ccr": {"registry": ccr.host, "insecure": True},
            "upstreams": [{"registry": far, "insecure": True, "prefix": "up"}],
            "webhook": {"deadlineSeconds": DEADLINE_SECONDS},
        }
        timings: dict[str, list[float]] = {"baseline": [], "verify": []}
        with (
            LocalWebhook({**base, "policy": {}}, workers=1) as plain,
            LocalWebhook({**base, "policy": verify_section(key)}, workers=1) as verifying,
        ):
            for round_ in range(args.cold):
                prefix = f"r{round_}/"
                push_signed(client, prefix, 100 + 10 * round_, key)
                review = realistic_review(f"{far}/{prefix.rstrip('/')}")
                for label, hook in (("baseline", plain), ("verify", verifying)):
                    started = time.monotonic()
                    response = send_review(hook.url + "/mutate", review, hook.client_ssl_context())
                    timings[label].append(time.monotonic() - started)
                    if not response.get("allowed") or not response.get("patch"):
                        raise SystemExit(f"{label}: the cold review was not admitted and rewritten: {response}")
        print(
            f"cold: 4 new signed images per review behind a {args.rtt:g} ms RTT WAN, CCR empty; "
            f"deadline {DEADLINE_SECONDS:g} s; {args.cold} rounds"
        )
        for label, seconds in timings.items():
            print(
                f"{label:>14} median {statistics.median(seconds) * 1000:7.0f} ms   "
                f"max {max(seconds) * 1000:7.0f} ms   all {' '.join(f'{s * 1000:.0f}' for s in seconds)}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per warm run")
    parser.add_argument("--connections", default="1,8", help="comma-separated connection counts (warm)")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs per connection count; the median is shown")
    parser.add_argument("--cold", type=int, default=3, help="cold rounds, each with four new images")
    parser.add_argument("--rtt", type=float, default=110.0, help="the emulated WAN's round trip, ms (cold)")
    args = parser.parse_args(argv)
    key = new_key("ecdsa")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="ccr-bench-") as scratch:
        warm(args, key, Path(scratch))
    cold(args, key)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
