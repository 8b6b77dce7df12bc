"""Servers that misbehave in ways a proxy cannot: one that accepts connections and never answers, one that
answers a byte at a time, a bait that only counts who reached it, and a registry whose stored blob no longer
matches its digest."""

from __future__ import annotations

import socket
import ssl
import threading
import time

from webhook.testing.processes import RegistryServer


class SilentServer:
    """A TCP server that accepts connections and never answers them, counting them."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((address, 0))
        self.host = f"{address}:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        """Stop listening and close every connection held."""
        self.listener.close()
        for connection in self.held:
            connection.close()


class Bait:
    """A listener that never accepts by itself: `connections()` takes and counts whatever reached it."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((address, 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.reached = 0

    def connections(self) -> int:
        """How many connections have reached the bait so far (a completed connect waits in the backlog)."""
        while True:
            try:
                self.listener.accept()[0].close()
            except BlockingIOError:
                return self.reached
            self.reached += 1

    def close(self) -> None:
        self.listener.close()


class TricklingServer:
    """An HTTP server that answers every request with a status line and then one header byte per `interval`.

    Read timeouts never trip (a byte always comes in time) and the answer never ends within `seconds`,
    after which the connection closes. Over TLS with `tls` (a server context). Counts the connections it
    took and the ones that went away early.
    """

    def __init__(self, interval: float = 0.05, seconds: float = 60.0, tls: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.interval, self.seconds, self.tls = interval, seconds, tls
        self.accepted = 0
        self.abandoned = 0  # connections the client closed while the answer was still trickling
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection = self.listener.accept()[0]
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(self.seconds)
            try:
                if self.tls is not None:
                    connection = self.tls.wrap_socket(connection, server_side=True)
                connection.recv(65536)  # the request (small: a HEAD or a GET)
                connection.sendall(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
                ends = time.monotonic() + self.seconds
                while time.monotonic() < ends:
                    connection.sendall(b"a")
                    time.sleep(self.interval)
            except OSError:
                with self._lock:
                    self.abandoned += 1

    def close(self) -> None:
        self.listener.close()


def corrupt_blob(server: RegistryServer, digest: str) -> None:
    """Flip one byte of a blob in the registry's storage, keeping its length (flipping it again repairs it)."""
    hex_digest = digest.split(":", 1)[1]
    path = server.root / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)
