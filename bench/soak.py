"""Soak: a sustained, fixed-rate load of mixed AdmissionReviews on the real TLS server with real registries.

Starts an upstream and a CCR (distribution registries), `ccr-webhook serve` over TLS (2 gthread workers),
then sends `--rate` reviews a second for `--minutes`, open loop (each review is due at its own time,
whatever the answers before it did), over `--connections` kept-alive connections as the API server keeps
them. The mix: rewrites (the CCR holds the image), pins (it does not), denials (latest), reviews from a
dry-run namespace (/dry-run) and dryRun reviews. Short resolver caches send lookups to the real registries
all along. Each minute it records latency percentiles, errors (anything but the expected AdmissionReview)
and the RSS of the gunicorn master and workers; it writes bench/results/soak.md and soak.json, and exits
1 unless there were zero errors.

    ./dev bench soak [--minutes 10] [--rate 200] [--connections 16]   (python -m bench.soak)
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer
from webhook.testing.review_client import pod_review
from webhook.testing.sample_image import push_sample_image
from webhook.testing.webhook_process import LocalWebhook

RESULTS = Path(__file__).resolve().parent / "results"
IN_CCR, NOT_IN_CCR = ("web", "api", "worker", "cache"), ("batch", "tool")
# (kind, weight): what each review is, and how often it comes in the mix
MIX = (("rewrite", 40), ("pin", 20), ("deny", 15), ("dry-run namespace", 15), ("dryRun review", 10))


@dataclass
class Minute:
    """What one minute of the soak saw."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    late: int = 0  # reviews sent more than 100 ms after they were due (the load generator falling behind)
    rss_kib: dict[str, int] = field(default_factory=dict)

    def row(self, index: int) -> dict:
        """The minute's figures for the report."""
        ordered = sorted(self.latencies_ms) or [0.0]
        pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
        return {
            "minute": index + 1,
            "requests": len(self.latencies_ms) + sum(self.errors.values()),
            "errors": sum(self.errors.values()),
            "error_kinds": self.errors,
            "late": self.late,
            "p50_ms": pick(0.50),
            "p90_ms": pick(0.90),
            "p99_ms": pick(0.99),
            "max_ms": round(ordered[-1], 2),
            "rss_kib": self.rss_kib,
            "rss_total_kib": sum(self.rss_kib.values()),
        }


def review(kind: str, number: int, upstream: str) -> tuple[str, bytes]:
    """The path and body of the `number`th review of `kind`: one to three containers, plausible Pod around them."""
    images = {
        "rewrite": [f"{upstream}/team/{name}:1.0" for name in IN_CCR[: 1 + number % 3]],
        "pin": [f"{upstream}/team/{NOT_IN_CCR[number % 2]}:1.0", f"{upstream}/team/web:1.0"],
        "deny": [f"{upstream}/team/web:latest", f"{upstream}/team/api"],
        "dry-run namespace": [f"{upstream}/team/{IN_CCR[number % 4]}:1.0", f"{upstream}/team/tool:1.0"],
        "dryRun review": [f"{upstream}/team/{IN_CCR[number % 4]}:1.0"],
    }[kind]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "soak-", "namespace": "team", "labels": {"app": "soak"}},
        "spec": {
            "containers": [
                {
                    "name": f"c{i}",
                    "image": image,
                    "env": [{"name": "N", "value": str(number)}],
                    "resources": {"requests": {"cpu": "10m"}},
                }
                for i, image in enumerate(images)
            ]
        },
    }
    path = "/dry-run" if kind == "dry-run namespace" else "/mutate"
    return path, json.dumps(pod_review(pod, dry_run=kind == "dryRun review", uid=f"soak-{number}")).encode()


def problem(kind: str, number: int, status: int, body: bytes, ccr: str) -> str | None:
    """What is wrong with an answer, or None when it is the one `kind` calls for."""
    if status != 200:
        return f"HTTP {status}"
    response = json.loads(body)["response"]
    patch = base64.b64decode(response["patch"]).decode() if "patch" in response else ""
    expected = {
        "rewrite": response["allowed"] and f'"{ccr}/up/team/' in patch,
        "pin": response["allowed"] and "@sha256:" in patch,
        "deny": not response["allowed"] and response["status"]["code"] == 403,
        "dry-run namespace": response["allowed"] and not patch and bool(response.get("warnings")),
        "dryRun review": response["allowed"] and f'"{ccr}/up/team/' in patch,
    }[kind]
    if response["uid"] != f"soak-{number}":
        return "wrong uid"
    return None if expected else f"unexpected answer to a {kind}"


class Soak:
    """The load generator: `connections` threads sending review `i` at `start + i / rate`, until `end`."""

    def __init__(
        self, hook: LocalWebhook, upstream: str, ccr: str, rate: float, minutes: int, connections: int
    ) -> None:
        self.hook, self.upstream, self.ccr = hook, upstream, ccr
        self.rate, self.total = rate, int(rate * 60 * minutes)
        self.minutes = [Minute() for _ in range(minutes)]
        self.kinds = [kind for kind, weight in MIX for _ in range(weight)]
        self.connections = connections
        self._next = 0
        self._lock = threading.Lock()
        self.start = 0.0

    def run(self) -> None:
        """Send every review, sampling RSS at the end of each minute."""
        self.start = time.monotonic() + 1.0
        threads = [threading.Thread(target=self._send_loop, daemon=True) for _ in range(self.connections)]
        for thread in threads:
            thread.start()
        for index, minute in enumerate(self.minutes):
            time.sleep(max(0.0, self.start + 60 * (index + 1) - time.monotonic()))
            minute.rss_kib = rss_kib(self.hook.pids())
            row = minute.row(index)
            print(
                f"minute {row['minute']:>2}: {row['requests']:>6} reviews, {row['errors']} errors, "
                f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, max {row['max_ms']} ms, "
                f"RSS {row['rss_total_kib'] // 1024} MiB",
                flush=True,
            )
        for thread in threads:
            thread.join(30)

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.total:
                return None
            self._next += 1
            return self._next - 1

    def _send_loop(self) -> None:
        connection = self._connect()
        while (number := self._take()) is not None:
            due = self.start + number / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            minute = self.minutes[min(int((due - self.start) // 60), len(self.minutes) - 1)]
            kind = self.kinds[number % len(self.kinds)]
            path, body = review(kind, number, self.upstream)
            sent = time.monotonic()
            try:
                connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                reply = connection.getresponse()
                wrong = problem(kind, number, reply.status, reply.read(), self.ccr)
            except (OSError, http.client.HTTPException, ValueError, KeyError) as err:
                wrong = f"{type(err).__name__}"
                connection.close()
                connection = self._connect()
            elapsed_ms = (time.monotonic() - sent) * 1000
            with self._lock:
                minute.late += sent - due > 0.1
                if wrong is None:
                    minute.latencies_ms.append(elapsed_ms)
                else:
                    minute.errors[wrong] = minute.errors.get(wrong, 0) + 1
        connection.close()

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.hook.port, context=self.hook.client_ssl_context(), timeout=10
        )


def rss_kib(pids: list[int]) -> dict[str, int]:
    """VmRSS of each process, by role: the master first, then the workers."""
    sizes = {}
    for index, pid in enumerate(pids):
        try:
            line = next(
                line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:")
            )
        except (FileNotFoundError, StopIteration):
            continue
        sizes["master" if index == 0 else f"worker {pid}"] = int(line.split()[1])
    return sizes


def push_images(upstream: RegistryServer, ccr: RegistryServer) -> None:
    """Every image upstream; those of IN_CCR in the CCR too, under the `up` prefix."""
    for server, names, prefix in ((upstream, IN_CCR + NOT_IN_CCR, ""), (ccr, IN_CCR, "up/")):
        client = RegistryClient(server.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
        for seed, name in enumerate(names):
            push_sample_image(client, f"{prefix}team/{name}", "1.0", layer_sizes=[1024], seed=seed)


def report(rows: list[dict], settings: dict) -> dict:
    """The summary the markdown and the JSON share."""
    latencies = [row["p99_ms"] for row in rows]
    first, last = rows[0]["rss_total_kib"], rows[-1]["rss_total_kib"]
    return {
        **settings,
        "requests": sum(row["requests"] for row in rows),
        "errors": sum(row["errors"] for row in rows),
        "late": sum(row["late"] for row in rows),
        "worst_minute_p99_ms": max(latencies),
        "median_minute_p99_ms": statistics.median(latencies),
        "max_ms": max(row["max_ms"] for row in rows),
        "rss_first_minute_kib": first,
        "rss_last_minute_kib": last,
        "rss_growth_kib": last - first,
        "minutes": rows,
    }


def write_markdown(summary: dict, path: Path) -> None:
    """bench/results/soak.md: the settings, the verdict and one row per minute."""
    lines = [
        "# Soak: ccr-webhook under a sustained mixed load",
        "",
        f"`python -m bench.soak --minutes {summary['minutes_run']} --rate {summary['rate']:g} "
        f"--connections {summary['connections']}` on {summary['cpus']} CPUs, {summary['started']}. "
        f"Load average (1, 5, 15 min) at the start {', '.join(map(str, summary['load_start']))}, at the end "
        f"{', '.join(map(str, summary['load_end']))}"
        f"{' (the machine was shared with other work)' if summary['load_start'][0] > 1.5 else ''}.",
        "",
        "The real TLS server (2 gthread workers x 8 threads), real distribution registries, resolver caches of "
        "10 s (digests) and 5 s (the CCR), so lookups reach the registries all along. Mix per 100 reviews: "
        + ", ".join(f"{weight} {kind}" for kind, weight in MIX)
        + ".",
        "",
        f"**{summary['requests']} reviews, {summary['errors']} errors**; {summary['late']} sent more than 100 ms late. "
        f"p99 per minute: median {summary['median_minute_p99_ms']} ms, worst {summary['worst_minute_p99_ms']} ms; "
        f"slowest answer {summary['max_ms']} ms. "
        f"RSS of master and workers: {summary['rss_first_minute_kib'] // 1024} MiB "
        f"after the first minute, {summary['rss_last_minute_kib'] // 1024} MiB after the last "
        f"({summary['rss_growth_kib'] / 1024:+.1f} MiB).",
        "",
        "| minute | reviews | errors | p50 ms | p90 ms | p99 ms | max ms | RSS MiB (master + workers) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["minutes"]:
        lines.append(
            f"| {row['minute']} | {row['requests']} | {row['errors']} | {row['p50_ms']} | {row['p90_ms']} | "
            f"{row['p99_ms']} | {row['max_ms']} | {row['rss_total_kib'] / 1024:.1f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10, help="how long to keep the load up (default: 10)")
    parser.add_argument("--rate", type=float, default=200.0, help="reviews per second (default: 200)")
    parser.add_argument("--connections", type=int, default=16, help="kept-alive connections (default: 16)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where soak.md and soak.json go")
    args = parser.parse_args(argv)
    with RegistryServer() as upstream, RegistryServer() as ccr:
        push_images(upstream, ccr)
        settings = {
            "ccr": {"registry": ccr.host, "insecure": True},
            "upstreams": [{"registry": upstream.host, "insecure": True, "prefix": "up"}],
            "resolver": {"cacheSeconds": 10, "ccrCacheSeconds": 5, "negativeCacheSeconds": 2},
            "webhook": {"warmerUrl": ""},
        }
        with LocalWebhook(settings, workers=2, serve_args=["--threads", "8"]) as hook:
            started, load_start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
            soak = Soak(hook, upstream.host, ccr.host, args.rate, args.minutes, args.connections)
            soak.run()
            load_end = os.getloadavg()
    rows = [minute.row(index) for index, minute in enumerate(soak.minutes)]
    summary = report(
        rows,
        {
            "minutes_run": args.minutes,
            "rate": args.rate,
            "connections": args.connections,
            "cpus": os.cpu_count(),
            "started": started,
            "load_start": [round(x, 2) for x in load_start],
            "load_end": [round(x, 2) for x in load_end],
        },
    )
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_markdown(summary, args.output / "soak.md")
    print(f"{summary['requests']} reviews, {summary['errors']} errors; report in {args.output / 'soak.md'}")
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
