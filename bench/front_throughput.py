"""Held content: throughput and CPU per GB straight from the CCR registry against through the CCR front.

    ./dev bench front_throughput [--runs N] [--size MIB] [--readers N] [--tls]

One blob of SIZE MiB is in the CCR already (the pre-warmed case). Each round, READERS fast streaming
clients (raw sockets, 1 MiB `recv_into`, nothing else: a slow client such as skopeo hides the server's
cost) read it at once from each path in turn, the order rotating every round:

- `registry`: the CCR registry directly;
- `front`: through a front that streams held blobs through the registry (splice);
- `front+held`: through a front with `front.registryStorageDir`, sending them from the registry's files;
- with `--tls`, the same two fronts on a TLS port (`tls`, `tls+held`), where sendfile is impossible.

CPU is the utime+stime (/proc/PID/stat) the registry and the front spent during the round, per GB
delivered. The table shows medians and the ratios to `registry` (targets: throughput >= 0.9, CPU <= 1.2).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import socket
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from webhook import tls
from webhook.registry.client import RegistryClient
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

MiB = 1024 * 1024
GB = 1e9
BUFFER_BYTES = MiB
TICKS = os.sysconf("SC_CLK_TCK")
REPOSITORY = "up/bench/held"


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds the processes `pids` have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    return total / TICKS


def read_blob(port: int, path: str, context: ssl.SSLContext | None, digest: Callable[[bytes], None] | None) -> int:
    """GET `path` on 127.0.0.1:`port` with one raw socket and a 1 MiB buffer; the body's length (checked)."""
    with contextlib.ExitStack() as stack:
        sock: socket.socket = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=60))
        if context is not None:
            sock = stack.enter_context(context.wrap_socket(sock, server_hostname="localhost"))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        buffer = bytearray(BUFFER_BYTES)
        view = memoryview(buffer)
        head = b""
        while b"\r\n\r\n" not in head:
            count = sock.recv_into(buffer)
            if count == 0:
                raise ConnectionError("closed before the end of the head")
            head += bytes(view[:count])
        head, body = head.split(b"\r\n\r\n", 1)
        status = head.split(b" ", 2)[1]
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        if status != b"200":
            raise ConnectionError(f"GET {path}: {status.decode()}")
        received = len(body)
        if digest is not None:
            digest(body)
        while received < length:
            count = sock.recv_into(buffer)
            if count == 0:
                raise ConnectionError(f"closed after {received} of {length} bytes")
            if digest is not None:
                digest(view[:count])
            received += count
        return received


@dataclass
class Path_:
    """One way to the blob: a port, TLS or not, and the processes whose CPU it costs."""

    name: str
    port: int
    pids: list[int]
    context: ssl.SSLContext | None = None
    rates: list[float] = field(default_factory=list)  # bytes per second
    cpu: list[float] = field(default_factory=list)  # CPU seconds per GB

    def verify(self, path: str, expected: str) -> None:
        """One read with the digest checked: every path serves the blob's very bytes."""
        hasher = hashlib.sha256()
        read_blob(self.port, path, self.context, hasher.update)
        if "sha256:" + hasher.hexdigest() != expected:
            raise AssertionError(f"{self.name} served other bytes")

    def round(self, path: str, readers: int) -> None:
        """`readers` concurrent reads of `path`: their aggregate rate and the CPU per GB they cost."""
        results: list[int] = []
        errors: list[BaseException] = []

        def one() -> None:
            try:
                results.append(read_blob(self.port, path, self.context, None))
            except (OSError, ValueError) as err:
                errors.append(err)

        threads = [threading.Thread(target=one) for _ in range(readers)]
        cpu_before, started = cpu_seconds(self.pids), time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        elapsed, cpu = time.monotonic() - started, cpu_seconds(self.pids) - cpu_before
        if errors or len(results) != readers:
            raise RuntimeError(f"{self.name}: {errors or 'a reader did not finish'}")
        self.rates.append(sum(results) / elapsed)
        self.cpu.append(cpu / (sum(results) / GB))


@contextlib.contextmanager
def fronts(ccr: RegistryServer, with_tls: bool) -> Iterator[list[tuple[str, LocalFront, bool]]]:
    """The fronts to measure (name, process, TLS): streaming and held, on plain ports and with `with_tls` on TLS."""
    settings = {
        "ccr": {"registry": "ccr.bench", "endpoint": ccr.url, "insecure": True},
        "upstreams": [{"registry": "upstream.bench", "endpoint": "http://127.0.0.1:9", "insecure": True}],
    }
    with tempfile.TemporaryDirectory(prefix="ccr-bench-tls-") as directory:
        cert, key = Path(directory) / "front.crt", Path(directory) / "front.key"
        tls.issue_serving_cert(tls.generate_ca("bench"), ["localhost"], ["127.0.0.1"]).write(cert, key)
        served = {"tlsCert": str(cert), "tlsKey": str(key)}
        held = {"registryStorageDir": str(ccr.root)}
        kinds = [("front", {}, False), ("front+held", held, False)]
        if with_tls:
            kinds += [("tls", served, True), ("tls+held", {**served, **held}, True)]
        with contextlib.ExitStack() as stack:
            started = []
            for name, front, secure in kinds:
                process = LocalFront({**settings, "front": front})
                stack.callback(process.cleanup)
                started.append((name, process.start(), secure))
            yield started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=300, help="the blob's size in MiB (default 300)")
    parser.add_argument("--readers", type=int, default=3, help="concurrent readers per round (default 3)")
    parser.add_argument("--tls", action="store_true", help="measure fronts on a TLS port too")
    args = parser.parse_args()
    client_tls = ssl.create_default_context()
    client_tls.check_hostname, client_tls.verify_mode = False, ssl.CERT_NONE  # a throwaway certificate
    with RegistryServer() as ccr:
        client = RegistryClient(ccr.url, insecure=True, connect_timeout=2, read_timeout=60, max_connections=8)
        pushed = push_sample_image(client, REPOSITORY, "v1", [args.size * MiB], seed=7)
        blob = pushed.blobs[0]  # the layer (the config comes after it)
        path = f"/v2/{REPOSITORY}/blobs/{blob}"
        assert ccr.process is not None
        with fronts(ccr, args.tls) as started:
            paths = [Path_("registry", ccr.port, [ccr.process.pid])]
            for name, front, secure in started:
                assert front.process is not None
                paths.append(
                    Path_(name, front.port, [ccr.process.pid, front.process.pid], client_tls if secure else None)
                )
            for way in paths:
                way.verify(path, blob)
            for run in range(args.runs):
                for way in paths[run % len(paths) :] + paths[: run % len(paths)]:
                    way.round(path, args.readers)
    report(paths, args)


def report(paths: list[Path_], args: argparse.Namespace) -> None:
    """The table: median throughput and CPU per GB of every path, and their ratios to the registry's."""
    base_rate, base_cpu = statistics.median(paths[0].rates), statistics.median(paths[0].cpu)
    print(f"{args.readers} readers of a {args.size} MiB held blob, {args.runs} rounds, load {os.getloadavg()[0]:.2f}")
    print(f"{'path':<11} {'GB/s':>6} {'x registry':>10} {'CPU-s/GB':>9} {'x registry':>10}   GB/s per round")
    for way in paths:
        rate, cpu = statistics.median(way.rates), statistics.median(way.cpu)
        rounds = " ".join(f"{value / GB:.2f}" for value in way.rates)
        print(
            f"{way.name:<11} {rate / GB:>6.2f} {rate / base_rate:>10.2f} {cpu:>9.3f} {cpu / base_cpu:>10.2f}   {rounds}"
        )


if __name__ == "__main__":
    main()
