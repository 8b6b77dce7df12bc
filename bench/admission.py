"""Admission throughput and latency: real registries, the real TLS gunicorn, `wrk` posting one Pod review.

Starts an upstream and a CCR (distribution registries holding the same images), `ccr-webhook serve`
over TLS with its default two workers, warms every worker's resolver cache, then drives a ~4 KB
review (3 containers + 1 initContainer, each rewritten to the CCR) at each connection count and prints
requests per second, p50/p90/p99 latency, and the server's CPU time per request (utime + stime of the
gunicorn master and workers, from /proc, before and after): the median of a few runs, because each run
opens new connections and the kernel spreads them over the two workers differently each time.

    ./dev bench admission [--duration 10] [--connections 1,8,32] [--repeat 3]   (python -m bench.admission)
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer
from webhook.testing.review_client import pod_review
from webhook.testing.sample_image import push_sample_image
from webhook.testing.webhook_process import LocalWebhook

IMAGES = ("web", "sidecar", "metrics", "init")

# wrk reports its numbers from Lua: latency in microseconds, duration in microseconds.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("REVIEW_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
function done(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
            + summary.errors.write + summary.errors.timeout
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, '
    .. '"p90_us": %d, "p99_us": %d, "errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99), bad))
end
"""


@dataclass(frozen=True)
class Run:
    """One wrk run and the server CPU it cost."""

    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / max(self.requests, 1)


HEADER = f"{'connections':>11} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10} {'errors':>6}"


def row(label: str, runs: list[Run]) -> str:
    """The median of each column over `runs`, errors summed."""
    median = statistics.median
    return (
        f"{label:>11} {median([r.rps for r in runs]):>7.0f} {median([r.p50_ms for r in runs]):>7.2f} "
        f"{median([r.p90_ms for r in runs]):>7.2f} {median([r.p99_ms for r in runs]):>7.2f} "
        f"{median([r.cpu_ms_per_request for r in runs]):>10.3f} {sum(r.errors for r in runs):>6}"
    )


def realistic_review(registry: str) -> dict:
    """A realistic ~4 KB Pod review: env, probes, resources and mounts around four upstream images."""

    def container(name: str) -> dict:
        return {
            "name": name,
            "image": f"{registry}/team/{name}:1.0",
            "imagePullPolicy": "IfNotPresent",
            "args": ["--listen=:8080", f"--name={name}", "--log-format=json"],
            "env": [{"name": f"SETTING_{i}", "value": f"value-{name}-{i}"} for i in range(4)],
            "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": {
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c6b5-",
            "namespace": "team",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d9f8c6b5",
                    "uid": "6c0f5c2e-8d7c-4c2b-9d7e-3f0e1d2c3b4a",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "containers": [container(name) for name in IMAGES[:3]],
            "initContainers": [container(IMAGES[3])],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {"medium": "Memory"}}],
            "serviceAccountName": "web",
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
        },
    }
    return pod_review(pod)


def push_images(upstream: RegistryServer, ccr: RegistryServer) -> None:
    """Each image upstream, and the same image in the CCR under the `up` prefix."""
    for url, prefix in ((upstream.url, ""), (ccr.url, "up/")):
        client = RegistryClient(url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
        for seed, name in enumerate(IMAGES):
            push_sample_image(client, f"{prefix}team/{name}", "1.0", layer_sizes=[1024], seed=seed)


def server_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of every process, in seconds."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: Path, review_file: Path, connections: int, seconds: float) -> dict:
    """Run wrk once and return its RESULT line."""
    command = [
        "wrk",
        "-t",
        str(min(connections, 2)),
        "-c",
        str(connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, env={**os.environ, "REVIEW_FILE": str(review_file)}
    ).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT ")).split(" ", 1)[1])


def measure(hook: LocalWebhook, script: Path, review_file: Path, connections: int, seconds: float) -> Run:
    pids = hook.pids()
    before = server_cpu_seconds(pids)
    result = wrk(f"{hook.url}/mutate", script, review_file, connections, seconds)
    cpu = server_cpu_seconds(pids) - before
    return Run(
        connections,
        result["requests"],
        result["duration_us"] / 1e6,
        result["p50_us"] / 1000,
        result["p90_us"] / 1000,
        result["p99_us"] / 1000,
        result["errors"],
        cpu,
    )


def check_answer(hook: LocalWebhook, review: bytes) -> None:
    """One review by hand: the benchmark measures the rewriting path, so the answer must carry a patch."""
    request = urllib.request.Request(f"{hook.url}/mutate", data=review, headers={"Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=str(hook.ca_file))
    with urllib.request.urlopen(request, context=context) as reply:
        response = json.loads(reply.read())["response"]
    if not response.get("patch"):
        raise SystemExit(f"the webhook did not rewrite the Pod: {response}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per connection count")
    parser.add_argument("--connections", default="1,8,32", help="comma-separated connection counts")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker (serve --threads)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per connection count, each on new connections (they spread over the workers "
        "differently each time); the median is reported",
    )
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="ccr-bench-") as scratch,
        RegistryServer() as upstream,
        RegistryServer() as ccr,
    ):
        push_images(upstream, ccr)
        settings = {
            "ccr": {"registry": ccr.host, "insecure": True},
            "upstreams": [{"registry": upstream.host, "insecure": True, "prefix": "up"}],
        }
        review = json.dumps(realistic_review(upstream.host)).encode()
        review_file, script = Path(scratch) / "review.json", Path(scratch) / "post.lua"
        review_file.write_bytes(review)
        script.write_text(WRK_SCRIPT)
        with LocalWebhook(settings, serve_args=["--threads", str(args.threads)]) as hook:
            check_answer(hook, review)
            wrk(f"{hook.url}/mutate", script, review_file, 8, 2)  # every worker's cache warm, code paths hot
            print(
                f"review: {len(review)} bytes, 3 containers + 1 initContainer, all rewritten; "
                f"{hook.workers} gunicorn gthread workers x {args.threads} threads over TLS; "
                f"{os.cpu_count()} CPUs shared with wrk; "
                f"median of {args.repeat} runs of {args.duration:g} s"
            )
            print(HEADER)
            for connections in (int(c) for c in args.connections.split(",")):
                runs = [measure(hook, script, review_file, connections, args.duration) for _ in range(args.repeat)]
                print(row(str(connections), runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
