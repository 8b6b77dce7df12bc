"""Slow-connection attackers for our ports, for the tests, `bench/slowloris.py` and `bench/front_flood.py`.

Kinds of connection that open and stall: one trickles a real TLS ClientHello a byte at a time and never
finishes the handshake; one completes the handshake and trickles an HTTP request whose body never
arrives; one announces a body of a gigabyte and trickles it; one sends nothing at all; one sends
`GET /v2/` and then a header byte at a time (over TLS or not). All are reopened when the server closes
them, as a persistent attacker would, from one source address if asked; how long each lived before the
server closed it is kept.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

_PARTIAL_BODY_BYTES = 4096
_OVERSIZED_BODY_BYTES = 1 << 30
_TICK_SECONDS = 0.25  # how often a closed connection is noticed (so a lifetime is known to about this)


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello, as the first flight of a client handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    connection = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    try:
        connection.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def partial_request(length: int = _PARTIAL_BODY_BYTES) -> bytes:
    """An AdmissionReview POST whose headers announce a body of `length` bytes that only ever starts to arrive."""
    head = (
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + b'{"apiVersion": "admission.k8s.io/v1", ' + b" " * _PARTIAL_BODY_BYTES


def endless_head() -> bytes:
    """A pull's request line and a first header, then a header that goes on for as long as it is trickled."""
    return b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * _PARTIAL_BODY_BYTES


@dataclass
class _Stalled:
    """One attacking connection: what it sends, how far it got."""

    tls: bool  # handshake first, then trickle `payload` inside TLS
    payload: bytes
    first: int = 0  # how many bytes of `payload` go at once when it opens
    sock: socket.socket | None = None
    sent: int = 0
    opened: float = 0.0
    answered: bool = False  # the server sent something (a busy answer) before it closed


@dataclass
class SlowClients:
    """`trickled` connections sending a ClientHello, `partial` ones a request, `oversized` ones a request announcing
    a gigabyte, `idle` ones nothing, `heads` ones a request head that never ends (over TLS with `heads_tls`):
    one byte each per `interval`, from `source` (an address of this host) when given.

    A context manager: the connections are opened on entry and held (reopened when closed by the server,
    counted in `reopened`) by one thread until exit.
    """

    host: str
    port: int
    trickled: int
    partial: int
    oversized: int = 0
    idle: int = 0
    heads: int = 0
    heads_tls: bool = False
    source: str | None = None
    interval: float = 0.25
    connect_timeout: float = 1.0
    reopened: int = 0
    refused: int = 0  # connections that failed to open (a TLS handshake the server cut, among others)
    lifetimes: list[float] = field(default_factory=list)  # seconds each lived until the server closed it silently
    answered: int = 0  # connections the server answered (503) and closed
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _connections: list[_Stalled] = field(default_factory=list)
    _tls: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)

    def __enter__(self) -> SlowClients:
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE
        hello, request, huge = client_hello(), partial_request(), partial_request(_OVERSIZED_BODY_BYTES)
        self._connections = [_Stalled(False, hello) for _ in range(self.trickled)]
        self._connections += [_Stalled(True, request) for _ in range(self.partial)]
        self._connections += [_Stalled(True, huge) for _ in range(self.oversized)]
        self._connections += [_Stalled(False, b"") for _ in range(self.idle)]
        head = endless_head()
        self._connections += [_Stalled(self.heads_tls, head, head.index(b"X-Slow")) for _ in range(self.heads)]
        for connection in self._connections:
            if connection.tls and connection.payload is not head:
                connection.first = connection.payload.index(b"\r\n\r\n") + 4
        for connection in self._connections:
            self._open(connection)
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for connection in self._connections:
            self._close(connection)
        self._selector.close()

    @property
    def open_connections(self) -> int:
        """How many attacking connections are open now."""
        return sum(connection.sock is not None for connection in self._connections)

    def _run(self) -> None:
        """Every `interval`, a byte on each connection (or a reopening); every tick, which ones the server closed."""
        due = time.monotonic() + self.interval
        while not self._stop.wait(min(self.interval, _TICK_SECONDS)):
            for key, _events in self._selector.select(0):  # closed by the server, or answered
                if not self._still_open(key.data):
                    self._gone(key.data)
            if time.monotonic() < due:
                continue
            due += self.interval
            for connection in self._connections:
                if connection.sock is None:
                    self.reopened += 1
                    self._open(connection)
                elif connection.sent < len(connection.payload) and not self._send(connection, 1):
                    self._gone(connection)

    def _gone(self, connection: _Stalled) -> None:
        """The server closed `connection`: count how, and close our end (reopened at the next interval)."""
        if connection.answered:
            self.answered += 1
        else:
            self.lifetimes.append(time.monotonic() - connection.opened)
        self._close(connection)

    @staticmethod
    def _still_open(connection: _Stalled) -> bool:
        """Read what the server sent (and drop it); False once it has closed the connection."""
        sock = connection.sock
        if sock is None:
            return False
        try:
            sock.settimeout(0)
            if not sock.recv(65536):
                return False
            connection.answered = True
        except (ssl.SSLWantReadError, BlockingIOError):
            pass  # nothing from the server: still open
        except OSError:
            return False
        return True

    def _open(self, connection: _Stalled) -> None:
        """Connect (and for `tls`, handshake) within the connect timeout; on failure the next tick tries again."""
        try:
            source = (self.source, 0) if self.source else None
            sock = socket.create_connection((self.host, self.port), self.connect_timeout, source)
        except OSError:
            self.refused += 1
            return
        if connection.tls:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname="localhost")
            except (OSError, ssl.SSLError):
                self.refused += 1
                sock.close()
                return
        connection.sock, connection.sent, connection.opened, connection.answered = sock, 0, time.monotonic(), False
        # The head (or the request line) goes at once: the server sees a request start; then a byte at a time.
        if connection.first and not self._send(connection, connection.first):
            self._close(connection)
            return
        self._selector.register(sock, selectors.EVENT_READ, connection)

    def _send(self, connection: _Stalled, count: int) -> bool:
        sock = connection.sock
        assert sock is not None
        chunk = connection.payload[connection.sent : connection.sent + count]
        if not chunk:
            return True  # all sent; hold the connection open
        try:
            sock.settimeout(self.connect_timeout)
            sock.sendall(chunk)
        except OSError:
            return False
        connection.sent += len(chunk)
        return True

    def _close(self, connection: _Stalled) -> None:
        if connection.sock is not None:
            try:
                self._selector.unregister(connection.sock)
            except (KeyError, ValueError):
                pass
            try:
                connection.sock.close()
            except OSError:
                pass
        connection.sock = None
