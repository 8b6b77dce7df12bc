"""Held content: throughput and CPU per GB straight from the CCR registry against through the CCR front.

    ./dev bench front_throughput [--runs N] [--size MIB] [--readers N] [--tls]

One blob of SIZE MiB is in the CCR already (the pre-warmed case). Each round, READERS fast streaming
clients (raw sockets, 1 MiB `recv_into`, nothing else: a slow client such as skopeo hides the server's
cost) read it at once from each path in turn, the order rotating every round:

- `registry`: the CCR registry directly;
- `front`: through a front that streams held blobs through the registry (splice);
- `front+held`: through a front with `front.registryStorageDir`, sending them from the registry's files;
- with `--tls`, the same two fronts on a TLS port (`tls`, `tls+held`), where sendfile is impossible,
  compared to a registry serving TLS itself from the same storage (`registry-tls`).

CPU is the utime+stime (/proc/PID/stat) the registry and the front spent during the round, per GB
delivered. The table shows medians and the ratios to the registry on the same transport (targets:
throughput >= 0.9, CPU <= 1.2).
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
class Way:
    """One way to the blob: a port, TLS or not, the processes whose CPU it costs, the registry it is compared to."""

    name: str
    port: int
    pids: list[int]
    context: ssl.SSLContext | None = None
    baseline: Way | None = None  # None: it is a registry itself
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
def testbed(ccr: RegistryServer, with_tls: bool) -> Iterator[list[Way]]:
    """Every way to measure: the registry, the fronts (streaming, held) and, `with_tls`, their TLS twins beside a
    second registry serving TLS from the same storage (the baseline of a TLS port)."""
    client_tls = ssl.create_default_context()
    client_tls.check_hostname, client_tls.verify_mode = False, ssl.CERT_NONE  # a throwaway certificate
    settings = {
        "ccr": {"registry": "ccr.bench", "endpoint": ccr.url, "insecure": True},
        "upstreams": [{"registry": "upstream.bench", "endpoint": "http://127.0.0.1:9", "insecure": True}],
    }
    assert ccr.process is not None
    registry = Way("registry", ccr.port, [ccr.process.pid])
    with tempfile.TemporaryDirectory(prefix="ccr-bench-tls-") as directory, contextlib.ExitStack() as stack:
        cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        tls.issue_serving_cert(tls.generate_ca("bench"), ["localhost"], ["127.0.0.1"]).write(cert, key)
        served = {"tlsCert": str(cert), "tlsKey": str(key)}
        held = {"registryStorageDir": str(ccr.root)}
        kinds: list[tuple[str, dict[str, str], Way]] = [("front", {}, registry), ("front+held", held, registry)]
        ways = [registry]
        if with_tls:
            secure = stack.enter_context(RegistryServer(root=ccr.root, tls=(cert, key)))
            assert secure.process is not None
            secure_registry = Way("registry-tls", secure.port, [secure.process.pid], client_tls)
            ways.append(secure_registry)
            kinds += [("tls", served, secure_registry), ("tls+held", {**served, **held}, secure_registry)]
        for name, front, baseline in kinds:
            process = LocalFront({**settings, "front": front})
            stack.callback(process.cleanup)
            process.start()
            assert process.process is not None
            pids = [ccr.process.pid, process.process.pid]
            ways.append(Way(name, process.port, pids, baseline.context, baseline))
        yield ways


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=300, help="the blob's size in MiB (default 300)")
    parser.add_argument("--readers", type=int, default=3, help="concurrent readers per round (default 3)")
    parser.add_argument("--tls", action="store_true", help="measure fronts on a TLS port too")
    args = parser.parse_args()
    with RegistryServer() as ccr:
        client = RegistryClient(ccr.url, insecure=True, connect_timeout=2, read_timeout=60, max_connections=8)
        pushed = push_sample_image(client, REPOSITORY, "v1", [args.size * MiB], seed=7)
        blob = pushed.blobs[0]  # the layer (the config comes after it)
        path = f"/v2/{REPOSITORY}/blobs/{blob}"
        with testbed(ccr, args.tls) as ways:
            for way in ways:
                way.verify(path, blob)
            for run in range(args.runs):
                for way in ways[run % len(ways) :] + ways[: run % len(ways)]:
                    way.round(path, args.readers)
    report(ways, args)


def report(ways: list[Way], args: argparse.Namespace) -> None:
    """The table: median throughput and CPU per GB of every way, and their ratios to their registry's."""
    print(f"{args.readers} readers of a {args.size} MiB held blob, {args.runs} rounds, load {os.getloadavg()[0]:.2f}")
    print(f"{'path':<13} {'GB/s':>6} {'x registry':>10} {'CPU-s/GB':>9} {'x registry':>10}   GB/s per round")
    for way in ways:
        rate, cpu = statistics.median(way.rates), statistics.median(way.cpu)
        base = way.baseline or way
        ratio, cpu_ratio = rate / statistics.median(base.rates), cpu / statistics.median(base.cpu)
        rounds = " ".join(f"{value / GB:.2f}" for value in way.rates)
        print(f"{way.name:<13} {rate / GB:>6.2f} {ratio:>10.2f} {cpu:>9.3f} {cpu_ratio:>10.2f}   {rounds}")


if __name__ == "__main__":
    main()
