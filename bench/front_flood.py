"""Normal pulls through the CCR front beside a flood from one address: latency alone, then under each flood, one run.

Starts a CCR (a real registry holding a small and a medium blob, so the front passes them through) and the
front, then for `--seconds` a phase pulls the blobs from `--clients` threads on 127.0.0.1 (alternating a
fresh and a kept-alive connection, as the slowloris bench does) while a probe asks `/healthz` twice a
second: first alone, then beside `--flood` connections from 127.0.0.2 that send nothing, then beside as
many that send `GET /v2/` and a header byte every `--interval` seconds (each reopened when the front
closes it; the flood runs in a process of its own so it does not share the pullers' interpreter). Prints
p50/p99 of the pulls per phase and size, pulls and probes served/failed, how long the flood connections
the front let in lived before it cut them (and how many it refused at once, or still held at the end).
With `--tls` the front serves TLS (the idle flood then stalls in the handshake, the slowloris
sends its head over TLS). With `--baseline DIR` (a directory holding another tree's `webhook/` package, e.g.
`git archive c698d6c webhook | tar -x -C DIR`) the same phases run against that front too, side by side.

    ./dev bench front_flood [--seconds 15] [--flood 2000] [--clients 4] [--tls] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import resource
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

from bench.slowloris import alternate
from webhook import tls
from webhook.registry.client import RegistryClient
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image
from webhook.testing.slow_clients import SlowClients

KiB, MiB = 1024, 1024 * 1024
SIZES = {"small": 256 * KiB, "medium": 8 * MiB}
FLOODER = "127.0.0.2"
CLIENT_TIMEOUT_SECONDS = 10.0
LET_IN_SECONDS = 3.0  # a flood connection closed sooner was refused (or cut) at once, not held until a deadline
FDS_WANTED = 16384


@dataclass
class Tally:
    """Pull latencies per size and failures, probes answered and failed, from every thread of a phase."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: {size: [] for size in SIZES})
    failures: int = 0
    probes: int = 0
    probe_failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Flood:
    """What the flood process saw: connections the front cut after it let them in (their lifetimes), the rest."""

    lifetimes: list[float]
    refused: int
    answered: int
    still_open: int

    def row(self) -> str:
        held = sorted(lived for lived in self.lifetimes if lived >= LET_IN_SECONDS)
        refused = self.refused + len(self.lifetimes) - len(held)
        cut = f"{len(held)} cut after p50 {statistics.median(held):.1f} s, max {held[-1]:.1f} s" if held else "none cut"
        return (
            f"{cut}; {refused} closed at once; {self.answered} answered 503 and closed; "
            f"{self.still_open} open at the end"
        )


@dataclass(frozen=True)
class Endpoint:
    """The front's port as the pullers reach it: plain, or TLS verified by `context`."""

    port: int
    context: ssl.SSLContext | None = None

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        """A new connection to it (not yet opened)."""
        if self.context is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        return http.client.HTTPSConnection("localhost", self.port, timeout=timeout, context=self.context)


def pull(endpoint: Endpoint, path: str, connection: http.client.HTTPConnection | None) -> http.client.HTTPConnection:
    """GET `path` whole (on `connection`, or a fresh one) and return the connection; OSError or ValueError if failed."""
    connection = connection or endpoint.connect(CLIENT_TIMEOUT_SECONDS)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise ValueError(f"HTTP {response.status}")
    if response.getheader("Content-Length") != str(len(body)):
        raise ValueError("short body")
    return connection


def drive(endpoint: Endpoint, paths: dict[str, str], clients: int, seconds: float) -> Tally:
    """`clients` threads pulling each size in turn for `seconds`, on a fresh and a kept-alive connection in turn;
    one more thread asking `/healthz` every 0.5 s."""
    tally = Tally()
    sizes = list(SIZES)

    def send(kept: http.client.HTTPConnection | None, turn: int) -> http.client.HTTPConnection:
        return pull(endpoint, paths[sizes[turn // 2 % len(sizes)]], kept)

    def record(turn: int, took: float | None) -> None:
        with tally.lock:
            if took is None:
                tally.failures += 1
            else:
                tally.seconds[sizes[turn // 2 % len(sizes)]].append(took)

    def probe() -> None:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            try:
                connection = endpoint.connect(2.0)
                connection.request("GET", "/healthz")
                ok = connection.getresponse().status == 200
                connection.close()
            except (OSError, http.client.HTTPException):
                ok = False
            with tally.lock:
                tally.probes += ok
                tally.probe_failures += not ok
            time.sleep(0.5)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    alternate(send, record, clients, seconds)
    prober.join(seconds + 5)
    return tally


def _flood(
    port: int, tls: bool, kind: str, count: int, interval: float, ready: Event, done: Event, results: Queue
) -> None:
    """The flood process: open `count` connections of `kind` from FLOODER, hold them until `done`, report."""
    idle, heads = (count, 0) if kind == "idle" else (0, count)
    with SlowClients(
        "127.0.0.1", port, 0, 0, idle=idle, heads=heads, heads_tls=tls, source=FLOODER, interval=interval
    ) as flood:
        ready.set()
        done.wait(600)
        results.put((flood.lifetimes, flood.refused, flood.answered, flood.open_connections))


def flooded(
    endpoint: Endpoint, kind: str, count: int, interval: float, phase: Callable[[], Tally]
) -> tuple[Tally, Flood]:
    """Run `phase()` while the flood process holds its connections; its result and what the flood saw."""
    context = multiprocessing.get_context("fork")
    ready, done, results = context.Event(), context.Event(), context.Queue()
    process = context.Process(
        target=_flood,
        args=(endpoint.port, endpoint.context is not None, kind, count, interval, ready, done, results),
        daemon=True,
    )
    process.start()
    try:
        if not ready.wait(120):
            raise RuntimeError("the flood did not open its connections within 120 s")
        tally = phase()
        done.set()
        lifetimes, refused, answered, still_open = results.get(timeout=60)
    finally:
        done.set()
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()
    return tally, Flood(lifetimes, refused, answered, still_open)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def print_phase(label: str, tally: Tally, flood: Flood | None, unloaded: Tally | None) -> None:
    for size, seconds in tally.seconds.items():
        p50, p99 = statistics.median(seconds) if seconds else float("nan"), _percentile(seconds, 0.99)
        ratio = ""
        if unloaded is not None and unloaded.seconds[size]:
            ratio = f"{p99 / _percentile(unloaded.seconds[size], 0.99):.2f}x"
        print(f"{label:>20} {size:>7} {len(seconds):>6} {p50 * 1000:>8.1f} {p99 * 1000:>8.1f} {ratio:>9}")
    print(f"{'':>20} pulls failed: {tally.failures}; /healthz answered {tally.probes}, failed {tally.probe_failures}")
    if flood is not None:
        print(f"{'':>20} flood: {flood.row()}")


def run_front(
    settings: dict, source: Path | None, context: ssl.SSLContext | None, paths: dict[str, str], args: argparse.Namespace
) -> None:
    front = LocalFront(settings)
    if source is not None:
        front.source_root = source
    front.start()
    endpoint = Endpoint(front.port, context)
    try:
        drive(endpoint, paths, args.clients, 2.0)  # connections and caches warm
        alone = drive(endpoint, paths, args.clients, args.seconds)
        print_phase("alone", alone, None, None)
        for kind in ("idle", "slowloris"):
            tally, flood = flooded(
                endpoint, kind, args.flood, args.interval, lambda: drive(endpoint, paths, args.clients, args.seconds)
            )
            print_phase(f"{args.flood} {kind}", tally, flood, alone)
    finally:
        front.cleanup()


def raise_fd_limit() -> int:
    """Raise this process's open-file limit (inherited by the front and the flood) towards FDS_WANTED."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FDS_WANTED if hard == resource.RLIM_INFINITY else min(FDS_WANTED, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each phase pulls")
    parser.add_argument("--flood", type=int, default=2000, help="connections from one address in each flood")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between a slowloris's header bytes")
    parser.add_argument("--clients", type=int, default=4, help="threads pulling normally")
    parser.add_argument("--baseline", type=Path, help="a directory holding another tree's webhook/ to compare")
    parser.add_argument("--tls", action="store_true", help="the front serves TLS; the slowloris heads come over TLS")
    args = parser.parse_args(argv)
    fds = raise_fd_limit()
    if fds < args.flood + 512:
        parser.error(f"the open-file limit is {fds}: too low for a flood of {args.flood}")
    with RegistryServer() as ccr, tempfile.TemporaryDirectory(prefix="front-flood-") as directory:
        client = RegistryClient(ccr.url, insecure=True, connect_timeout=2, read_timeout=60, max_connections=4)
        pushed = push_sample_image(client, "up/bench/flood", "v1", list(SIZES.values()), seed=19)
        paths = {size: f"/v2/up/bench/flood/blobs/{digest}" for size, digest in zip(SIZES, pushed.blobs, strict=False)}
        settings = {
            "ccr": {"registry": "ccr.bench", "endpoint": ccr.url, "insecure": True},
            "upstreams": [{"registry": "upstream.bench", "endpoint": "http://127.0.0.1:9", "insecure": True}],
        }
        context = None
        if args.tls:
            ca = tls.generate_ca("front-flood")
            tls.issue_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(f"{directory}/f.crt", f"{directory}/f.key")
            settings["front"] = {"tlsCert": f"{directory}/f.crt", "tlsKey": f"{directory}/f.key"}
            context = ssl.create_default_context(cadata=ca.cert_pem.decode())
        fronts: list[tuple[str, Path | None]] = [("this tree", None)]
        if args.baseline is not None:
            fronts.append((f"baseline {args.baseline}", args.baseline.resolve()))
        over = "TLS" if args.tls else "plain HTTP"
        print(f"{args.clients} pullers over {over}, {args.seconds:g} s a phase, flood from {FLOODER}; open files {fds}")
        print(f"load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
        for name, source in fronts:
            print(f"\n== front: {name}")
            print(f"{'':>20} {'size':>7} {'pulls':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99/alone':>9}")
            run_front(settings, source, context, paths, args)
        print(f"\nload average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
