"""Well-formed reviews beside connections that open and stall: latency with and without the attack, one run.

Starts an upstream and a CCR (real registries holding the same images), `ccr-webhook serve` over TLS
(two workers of eight threads), then sends the realistic review of bench/admission.py from a few clients
for `--seconds`, half on fresh TLS connections and half on kept-alive ones, first alone and then beside
`--stalled` attacking connections (half trickling a TLS ClientHello a byte at a time, half trickling an
HTTP request's body after the handshake, `--oversized` of them announcing a gigabyte instead; each
reopened when the server cuts it). Prints p50/p99/max and
how many answers took longer than the deadline (a failed or timed-out request counts as over it).

    ./dev bench slowloris [--seconds 20] [--stalled 64] [--oversized 8] [--clients 4]   (python -m bench.slowloris)
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.admission import mirror_settings, push_images, realistic_review
from webhook.testing.processes import RegistryServer
from webhook.testing.slow_clients import SlowClients
from webhook.testing.webhook_process import LocalWebhook

DEADLINE_SECONDS = 2.0
CLIENT_TIMEOUT_SECONDS = 10.0  # the API server gives up after timeoutSeconds (5 s); waiting longer shows how late


@dataclass
class Tally:
    """Latencies of answered reviews, and failures, from every client thread."""

    seconds: list[float] = field(default_factory=list)
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def row(self, label: str) -> str:
        ordered = sorted(self.seconds)
        over = sum(seconds > DEADLINE_SECONDS for seconds in ordered) + self.failures
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")
        p50 = statistics.median(ordered) if ordered else float("nan")
        worst = ordered[-1] if ordered else float("nan")
        return (
            f"{label:>22} {len(ordered) + self.failures:>8} {p50 * 1000:>8.1f} {p99 * 1000:>8.1f} "
            f"{worst * 1000:>9.1f} {over:>12} {self.failures:>7}"
        )


OVER = f"over {DEADLINE_SECONDS:g} s"
HEADER = f"{'':>22} {'reviews':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9} {OVER:>12} {'failed':>7}"


def drive(hook: LocalWebhook, body: bytes, clients: int, seconds: float) -> Tally:
    """`clients` threads sending `body` for `seconds`, alternating a fresh and a kept-alive connection."""
    tally = Tally()
    context = hook.client_ssl_context()

    def send(kept: http.client.HTTPConnection | None, turn: int) -> http.client.HTTPConnection:
        conn = kept or http.client.HTTPSConnection(
            "127.0.0.1", hook.port, context=context, timeout=CLIENT_TIMEOUT_SECONDS
        )
        conn.request("POST", "/mutate", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read()
        if reply.status != 200 or "patch" not in json.loads(data)["response"]:
            raise ValueError(f"HTTP {reply.status}")
        return conn

    def record(turn: int, took: float | None) -> None:
        with tally.lock:
            if took is None:
                tally.failures += 1
            else:
                tally.seconds.append(took)

    alternate(send, record, clients, seconds)
    return tally


def alternate(
    send: Callable[[http.client.HTTPConnection | None, int], http.client.HTTPConnection],
    record: Callable[[int, float | None], None],
    clients: int,
    seconds: float,
) -> None:
    """`clients` threads calling `send(connection, turn)` for `seconds`, on a fresh connection (None) and the
    kept-alive one in turn; `record(turn, seconds)` each time, with None for a failure (the connection dropped)."""
    stop = time.monotonic() + seconds

    def client() -> None:
        kept: http.client.HTTPConnection | None = None
        for turn in itertools.count():
            if time.monotonic() >= stop:
                return
            fresh = turn % 2 == 0
            started = time.monotonic()
            try:
                used = send(None if fresh else kept, turn)
            except (OSError, ssl.SSLError, ValueError, http.client.HTTPException):
                record(turn, None)
                if kept is not None:
                    kept.close()
                kept = None
                continue
            record(turn, time.monotonic() - started)
            if fresh:
                used.close()
            else:
                kept = used

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + CLIENT_TIMEOUT_SECONDS + 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each phase sends reviews")
    parser.add_argument("--stalled", type=int, default=64, help="attacking connections (half of each kind)")
    parser.add_argument("--oversized", type=int, default=8, help="of those, connections announcing a gigabyte")
    parser.add_argument("--clients", type=int, default=4, help="threads sending well-formed reviews")
    args = parser.parse_args(argv)
    with RegistryServer() as upstream, RegistryServer() as ccr:
        push_images(upstream, ccr)
        settings = mirror_settings(upstream, ccr, webhook={"deadlineSeconds": DEADLINE_SECONDS, "warmerUrl": ""})
        with LocalWebhook(settings, workers=2) as hook:
            body = json.dumps(realistic_review(upstream.host)).encode()
            drive(hook, body, args.clients, 2.0)  # both workers' resolver caches warm
            alone = drive(hook, body, args.clients, args.seconds)
            kinds = {"trickled": (args.stalled - args.oversized) // 2, "oversized": args.oversized}
            kinds["partial"] = args.stalled - args.oversized - kinds["trickled"]
            with SlowClients("127.0.0.1", hook.port, **kinds) as attack:
                attacked = drive(hook, body, args.clients, args.seconds)
                reopened = attack.reopened
    print(f"{args.clients} clients, {args.seconds:g} s a phase; 2 workers x 8 threads; deadline {DEADLINE_SECONDS:g} s")
    print(HEADER)
    print(alone.row("no attack"))
    print(attacked.row(f"{args.stalled} stalled connections"))
    print(f"stalled connections cut by the server and reopened by the attacker: {reopened}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
