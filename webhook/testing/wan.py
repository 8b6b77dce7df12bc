"""An emulated WAN link for the benchmarks and the demo: a loopback TCP proxy that adds delay and caps shared bandwidth.

A new connection first waits one round trip (the TCP handshake). Every byte crossing the proxy is first serialized
onto a link shared by all connections (one link per direction, `mbit_per_second` each), then delivered after half
the round-trip time. Request/response protocols therefore pay the RTT per round trip, and parallel pulls share the
bandwidth, as they do on a real WAN. TCP slow start and loss are not modelled: the link behaves like a well-tuned
long-lived connection, which flatters the baseline, not ccr-webhook.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

CHUNK = 64 * 1024
READ_AHEAD_SECONDS = 0.02


@dataclass
class Link:
    """One direction of the WAN: a serializer shared by every connection, and a byte counter."""

    bytes_per_second: float
    bytes_sent: int = 0
    _free_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reserve(self, size: int) -> float:
        """Book `size` bytes on the link; return the monotonic time their serialization ends."""
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + size / self.bytes_per_second
            self.bytes_sent += size
            return self._free_at


class WanProxy:
    """A TCP proxy on 127.0.0.1 in front of `target_port`, emulating a WAN; runs its own event loop thread."""

    def __init__(self, target_port: int, rtt_ms: float = 110.0, mbit_per_second: float = 200.0) -> None:
        self.target_port = target_port
        self.rtt_ms = rtt_ms
        self.mbit_per_second = mbit_per_second
        self.one_way = rtt_ms / 2000.0
        rate = mbit_per_second * 1_000_000 / 8
        self.down = Link(rate)  # target -> client (what pulls cost)
        self.up = Link(rate)  # client -> target
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="wan-proxy", daemon=True)

    @property
    def bytes_crossed(self) -> int:
        """Bytes that crossed the WAN in both directions since start (or the last reset)."""
        return self.down.bytes_sent + self.up.bytes_sent

    def reset_counters(self) -> None:
        """Zero the byte counters, between benchmark scenarios."""
        self.down.bytes_sent = self.up.bytes_sent = 0

    def start(self) -> WanProxy:
        """Listen on a free loopback port; `self.port` tells which."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop)
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and stop the loop."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    async def _close_all(self) -> None:
        """Stop listening and end every connection still open (a client's kept-alive pool, say)."""
        if self._server is not None:
            self._server.close()
        connections = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    def __enter__(self) -> WanProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2 * self.one_way)  # the TCP handshake's round trip
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                self._pump(client_reader, target_writer, self.up),
                self._pump(target_reader, client_writer, self.down),
                return_exceptions=True,
            )
        finally:
            for writer in (client_writer, target_writer):
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link) -> None:
        """Copy one direction: serialize each chunk on the shared link, deliver it one-way-delay later."""
        deliveries: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        deliverer = asyncio.ensure_future(self._deliver(deliveries, writer))
        try:
            while data := await reader.read(CHUNK):
                serialized = link.reserve(len(data))
                ahead = serialized - time.monotonic() - READ_AHEAD_SECONDS
                if ahead > 0:  # backpressure at the link's pace, with a little read-ahead so timer jitter adds no drift
                    await asyncio.sleep(ahead)
                await deliveries.put((serialized + self.one_way, data))
        except (ConnectionError, OSError):
            pass
        finally:
            await deliveries.put((time.monotonic() + self.one_way, b""))
            await deliverer

    @staticmethod
    async def _deliver(deliveries: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                due, data = await deliveries.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:  # the sender half-closed: pass that on, keep the other direction open
                    writer.write_eof()
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
