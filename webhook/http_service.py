"""The one bounded HTTP server of all our ports: the front's pull and peer endpoints, the warmer's hints and metrics.

Every port is open to clients that may mean harm, so no client, and no number of clients from one address,
may keep the others out. One event-loop thread accepts connections, does the TLS handshake and gathers the
request (head, and a small body whole) without blocking; only a connection with a whole request waiting is
handed to a worker thread, and a kept-alive connection goes back to the loop between requests, so a
connection that waits costs a file descriptor and a buffer, never a thread. The whole head (handshake
included) has one deadline, not one per byte; an address holds at most `per_address` connections (the next
ones are closed at once, other addresses still served); at most `threads` requests are served at once (the
next complete one gets `503 Retry-After: 1`, over TLS on a TLS port since its handshake is done); at most
`max_open` connections are open (the oldest still arriving is closed to make room). A body comes with a
Content-Length up to `max_body` or not at all (a Transfer-Encoding is handed on at once, to be refused).
The `probes` paths (`/healthz`, `/readyz`) are answered by the loop itself, so a liveness probe is answered
while every worker streams. `HTTPService` routes (method, path) to plain functions on top of it, reading
every request whole before its route runs; the front hands it a `BaseHTTPRequestHandler` of its own instead.

The idea, and `Gathering`/`request_state`, are shared with the webhook's gunicorn worker (`admission/worker.py`).
"""

from __future__ import annotations

import enum
import errno
import io
import ipaddress
import logging
import queue
import re
import selectors
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
HEADER_LIMIT_BYTES = 64 * 1024  # past this without the end of the head, the request goes on to be refused
HEAD_SECONDS = 10.0  # from accepting a connection (or a kept-alive one's next byte) to a whole request
IDLE_SECONDS = 60.0  # a kept-alive connection with no next request is closed after this
SOCKET_SECONDS = 30.0  # any one blocking write (or read) of a worker thread, unless the handler says otherwise
_LENGTH = re.compile(r"[0-9]{1,18}")
_READ_BYTES = 64 * 1024
_TICK_SECONDS = 0.25  # how often deadlines are checked
_ACCEPTS_PER_WAKE = 64
log = logging.getLogger("webhook.http_service")


def is_loopback(peer: str) -> bool:
    """Whether the address `peer` is this host's (127.0.0.0/8, ::1, or 127.x mapped into IPv6)."""
    try:
        return ipaddress.ip_address(peer.removeprefix("::ffff:")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as a route sees it."""

    method: str
    path: str
    query: Mapping[str, str]
    body: bytes
    peer: str  # the client's IP address


@dataclass(frozen=True, slots=True)
class Reply:
    """What a route answers."""

    status: int
    body: bytes
    content_type: str = TEXT


Route = Callable[[Request], Reply]
Probe = Callable[[], Reply]


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


# -- gathering a request without blocking (shared with admission/worker.py) ---------------------------------


class Arrived(enum.Enum):
    """How much of a request has arrived, as far as handing it to a thread goes."""

    PARTIAL = "partial"  # wait for more
    WHOLE = "whole"  # the head and the whole body are buffered
    REFUSABLE = "refusable"  # enough to refuse it (413, 400) without reading on; the connection closes after


class Want(enum.Enum):
    """What a gathering connection waits for, or that it is gone."""

    READ = "read"
    WRITE = "write"  # a TLS handshake waiting to write
    GONE = "gone"  # the client closed, or the connection failed


def request_state(data: bytes | bytearray, max_body_bytes: int, chunked: bool = True) -> Arrived:
    """Whether `data` holds a whole HTTP/1.1 request, or enough that a thread may refuse it at once.

    Whole: the head and a Content-Length body, or a chunked body up to its last chunk. Refusable: a head
    too long, a length that is not one (or two that differ), a body declared (or sent) larger than accepted, or
    any Transfer-Encoding unless `chunked` bodies are taken.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return Arrived.REFUSABLE if len(data) > HEADER_LIMIT_BYTES else Arrived.PARTIAL
    body = len(data) - end - 4
    headers = bytes(data[:end]).lower()
    if b"\ntransfer-encoding:" in headers and not chunked:
        return Arrived.REFUSABLE
    if b"\ntransfer-encoding:" in headers and b"chunked" in headers:
        if body > max_body_bytes:
            return Arrived.REFUSABLE
        return Arrived.WHOLE if data.endswith(b"0\r\n\r\n") else Arrived.PARTIAL
    lengths = set()
    for line in headers.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            lengths.add(value.strip())
    if not lengths:
        return Arrived.WHOLE
    try:
        (length,) = (int(value) for value in lengths)  # two different lengths: refused
    except ValueError:
        return Arrived.REFUSABLE
    if length < 0 or length > max_body_bytes:
        return Arrived.REFUSABLE
    return Arrived.WHOLE if body >= length else Arrived.PARTIAL


@dataclass(eq=False)
class Gathering:
    """A non-blocking connection whose TLS handshake and request are arriving: `advance` as the socket allows."""

    sock: socket.socket
    handshaken: bool  # True for plain sockets
    data: bytearray = field(default_factory=bytearray)

    def advance(self, max_body_bytes: int, chunked: bool = True) -> Arrived | Want:
        """Go on with the handshake and read what has come: a request state other than PARTIAL, or what to wait for."""
        try:
            if not self.handshaken:
                self.sock.do_handshake()  # type: ignore[attr-defined]
                self.handshaken = True
            while (state := request_state(self.data, max_body_bytes, chunked)) is Arrived.PARTIAL:
                room = HEADER_LIMIT_BYTES + 4 + max_body_bytes - len(self.data)  # so a buffer stays within that
                chunk = self.sock.recv(max(1, min(_READ_BYTES, room)))
                if not chunk:
                    return Want.GONE
                self.data += chunk
        except (ssl.SSLWantReadError, BlockingIOError):
            return Want.READ
        except ssl.SSLWantWriteError:
            return Want.WRITE
        except (OSError, ValueError):
            return Want.GONE
        return state


# -- the server ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class Connection:
    """One accepted connection as the server tracks it; a handler sees it as its `request`."""

    gathering: Gathering
    client_address: Any
    deadline: float
    kept: bool = False  # kept alive after an answer: the head deadline starts with its next request's first byte
    registered: int = 0  # the selector events it is registered for (0: not registered)
    keep: bool = False  # the handler left it open for the next request
    whole: bool = True  # its request arrived whole (not only enough to refuse it: then it closes after the answer)
    max_body: int | None = None  # the server's own unless set

    @property
    def sock(self) -> socket.socket:
        """The connection's socket (an `ssl.SSLSocket` on a TLS port)."""
        return self.gathering.sock

    @property
    def peer(self) -> str:
        """The client's IP address."""
        return str(self.client_address[0])


class _Writer(io.BufferedIOBase):
    """A handler's `wfile`: every write is sent whole (`sendall`), nothing is buffered."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class GatheredHandler(BaseHTTPRequestHandler):
    """A request handler answering the one request the server gathered: it reads from those bytes, never the socket.

    Mixed in before a `BaseHTTPRequestHandler` subclass by `BoundedServer`. `self.connection` is the raw socket
    (an `ssl.SSLSocket` on a TLS port), blocking with the handler's `timeout`, so a handler may `sendfile` or
    `splice` to it; leaving `close_connection` False hands the connection back to the server's loop.
    """

    protocol_version = "HTTP/1.1"
    request: Connection  # type: ignore[assignment]

    def setup(self) -> None:
        self.connection = self.request.sock
        self.connection.settimeout(self.timeout or SOCKET_SECONDS)
        self.rfile = io.BytesIO(self.request.gathering.data)
        self.wfile = _Writer(self.connection)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        self.request.keep = not self.close_connection
        self.request.gathering.data = bytearray(self.rfile.read())  # a pipelined next request, if any


_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class BoundedServer:
    """Serves `handler` on `listen` (over TLS with `tls`): one event loop gathers requests, worker threads answer.

    The interface of `socketserver`'s servers: `serve_forever` (in a thread of the caller's), `shutdown`,
    `server_close`, `server_address`.
    """

    def __init__(
        self,
        listen: str,
        handler: type[BaseHTTPRequestHandler],
        *,
        tls: ssl.SSLContext | None = None,
        threads: int = 32,
        per_address: int = 64,
        max_open: int | None = None,
        head_seconds: float = HEAD_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        max_body: int = 64 * 1024,
        probes: Mapping[str, Probe] | None = None,
        bodies_from: Callable[[str], bool] | None = None,
        name: str = "http",
    ) -> None:
        host, port = split_listen(listen)
        self._listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(1024)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self.server_address = self._listener.getsockname()
        self._handler = (
            handler if issubclass(handler, GatheredHandler) else type(handler.__name__, (GatheredHandler, handler), {})
        )
        self._tls = tls
        self.threads, self.per_address = threads, per_address
        self.max_open = max_open if max_open is not None else 4 * max(threads, per_address)
        self.head_seconds, self.idle_seconds, self.max_body = head_seconds, idle_seconds, max_body
        self._probes = dict(probes or {})
        self._bodies_from = bodies_from  # None: every address; else the others' requests go on at their head
        self.name = name
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._arriving: dict[Connection, None] = {}  # oldest first
        self._open: dict[str, int] = {}  # connections per client address
        self._total = 0
        self._returned: queue.SimpleQueue[Connection] = queue.SimpleQueue()  # from workers, for the loop
        self._work: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._busy = 0  # requests handed to workers and not yet back (the loop's count)
        self._workers = 0
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._paused_until = 0.0  # accepting paused while out of file descriptors

    @property
    def port(self) -> int:
        """The port it listens on (useful when `listen` asked for port 0)."""
        return int(self.server_address[1])

    @property
    def open_connections(self) -> int:
        """Connections open now, arriving, kept alive or served."""
        return self._total

    @property
    def busy(self) -> int:
        """Requests being answered by worker threads now."""
        return self._busy

    def serve_forever(self, poll_interval: float = _TICK_SECONDS) -> None:
        """Run the event loop until `shutdown()`."""
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, self._take_returned)
        next_check = time.monotonic() + poll_interval
        try:
            while not self._stopping.is_set():
                for key, _events in self._selector.select(timeout=min(poll_interval, _TICK_SECONDS)):
                    try:
                        key.data(key.fileobj)
                    except Exception:  # a bug must not stop the port: that connection is lost, the rest served
                        log.exception("%s: the event loop failed on one connection", self.name)
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + min(poll_interval, _TICK_SECONDS)
                    self._expire(now)
        finally:
            for connection in list(self._arriving):
                self._close(connection)
            for _ in range(self._workers):
                self._work.put(None)
            self._selector.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the loop (and wait for it); requests being answered finish on their own."""
        self._stopping.set()
        self._wake()
        self._stopped.wait(timeout=5.0)

    def server_close(self) -> None:
        """Close the listening socket."""
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()

    # -- accepting and gathering (the loop's thread only) ------------------------------------------------

    def _accept(self, _listener: Any) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                client, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("%s: cannot accept (%s); pausing briefly", self.name, err.strerror)
                    self._paused_until = time.monotonic() + _TICK_SECONDS
                    self._selector.unregister(self._listener)
                    if self._arriving:  # make room for the next client
                        self._close(next(iter(self._arriving)))
                return
            peer = str(address[0])
            if self._open.get(peer, 0) >= self.per_address:
                _discard(client)
                continue
            if self._total >= self.max_open:
                if not self._arriving:
                    _discard(client)
                    continue
                self._close(next(iter(self._arriving)))
            self._open[peer] = self._open.get(peer, 0) + 1
            self._total += 1
            client.setblocking(False)
            sock = client
            if self._tls is not None:
                try:
                    sock = self._tls.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    self._forget(peer)
                    _discard(client)
                    continue
            connection = Connection(Gathering(sock, self._tls is None), address, time.monotonic() + self.head_seconds)
            if self._bodies_from is not None and not self._bodies_from(peer):
                connection.max_body = 0  # handed on as soon as its head is in, to be refused without its body
            self._gather(connection)

    def _gather(self, connection: Connection) -> None:
        self._arriving[connection] = None
        self._progress(connection, None)

    def _progress(self, connection: Connection, _fileobj: Any) -> None:
        """Advance the connection; hand it on once its request is whole (or refusable)."""
        had = len(connection.gathering.data)
        max_body = self.max_body if connection.max_body is None else connection.max_body
        state = connection.gathering.advance(max_body, chunked=False)
        if connection.kept and len(connection.gathering.data) > had:  # its next request started: the deadline runs
            connection.kept = False
            connection.deadline = min(connection.deadline, time.monotonic() + self.head_seconds)
        if state is Want.GONE:
            self._close(connection)
        elif isinstance(state, Want):
            self._wait(connection, selectors.EVENT_WRITE if state is Want.WRITE else selectors.EVENT_READ)
        else:
            connection.whole = state is Arrived.WHOLE
            self._arrived(connection)

    def _wait(self, connection: Connection, events: int) -> None:
        if connection.registered == events:
            return
        callback = _Callback(self._progress, connection)
        if connection.registered:
            self._selector.modify(connection.sock, events, callback)
        else:
            self._selector.register(connection.sock, events, callback)
        connection.registered = events

    def _unregister(self, connection: Connection) -> None:
        if connection.registered:
            connection.registered = 0
            try:
                self._selector.unregister(connection.sock)
            except (KeyError, ValueError, OSError):
                pass

    def _arrived(self, connection: Connection) -> None:
        """A request is in: a probe is answered here, the rest by a worker, or 503 when every worker is busy."""
        del self._arriving[connection]
        self._unregister(connection)
        probe = self._probe(connection.gathering.data)
        if probe is not None:
            self._answer_here(connection, _probe_answer(probe, connection.gathering.data))
        elif self._busy >= self.threads:
            self._answer_here(connection, _BUSY)
        elif self._workers > self._busy or self._start_worker():
            self._busy += 1
            self._work.put(connection)
        else:
            self._answer_here(connection, _BUSY)

    def _start_worker(self) -> bool:
        """One more worker thread; False if none can be started now (the request is answered busy)."""
        try:
            threading.Thread(target=self._worker, name=f"{self.name}-worker", daemon=True).start()
        except RuntimeError as err:
            log.warning("%s: no worker thread started: %s", self.name, err)
            return False
        self._workers += 1
        return True

    def _probe(self, data: bytearray) -> Probe | None:
        if not self._probes:
            return None
        method, _, rest = bytes(data[: data.find(b"\r\n")]).partition(b" ")
        if method not in (b"GET", b"HEAD"):
            return None
        target = rest.partition(b" ")[0].decode("latin-1")
        return self._probes.get(urllib.parse.urlsplit(target).path)

    def _answer_here(self, connection: Connection, answer: bytes) -> None:
        """Send a small answer without blocking (a client that cannot take it loses it) and close."""
        try:
            connection.sock.send(answer)
        except (OSError, ValueError):
            pass
        self._close(connection, graceful=True)

    def _take_returned(self, _fileobj: Any) -> None:
        """Connections back from the workers: kept alive ones gather their next request, the rest are closed."""
        try:
            while self._wake_reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            try:
                connection = self._returned.get_nowait()
            except queue.Empty:
                return
            self._busy -= 1
            if not (connection.keep and connection.whole) or self._stopping.is_set():
                self._close(connection, graceful=True)
                continue
            try:
                connection.sock.setblocking(False)
            except OSError:
                self._close(connection)
                continue
            connection.kept, connection.keep = True, False
            connection.deadline = time.monotonic() + self.idle_seconds
            self._gather(connection)

    def _expire(self, now: float) -> None:
        """Close every connection whose request did not arrive whole in time; resume accepting after a pause."""
        for connection in [c for c in self._arriving if c.deadline <= now]:
            self._close(connection)
        if self._paused_until and now >= self._paused_until and not self._stopping.is_set():
            self._paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ, self._accept)

    def _close(self, connection: Connection, graceful: bool = False) -> None:
        self._arriving.pop(connection, None)
        self._unregister(connection)
        if graceful:
            try:
                connection.sock.shutdown(socket.SHUT_WR)
            except (OSError, ValueError):
                pass
        _discard(connection.sock)
        self._forget(connection.peer)

    def _forget(self, peer: str) -> None:
        self._total -= 1
        left = self._open.get(peer, 0) - 1
        if left > 0:
            self._open[peer] = left
        else:
            self._open.pop(peer, None)

    def _wake(self) -> None:
        try:
            self._wake_writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake is pending already, or the server is closed

    # -- workers -----------------------------------------------------------------------------------------

    def _worker(self) -> None:
        while (connection := self._work.get()) is not None:
            try:
                self._handler(connection, connection.client_address, self)
            except OSError as err:  # the client went away, or stopped reading
                log.debug("%s: answering %s ended early: %s", self.name, connection.peer, err)
                connection.keep = False
            except Exception:
                log.exception("%s: answering %s failed", self.name, connection.peer)
                connection.keep = False
            if self._stopping.is_set():  # the loop is gone: nobody else closes it
                _discard(connection.sock)
            else:
                self._returned.put(connection)
                self._wake()


@dataclass(frozen=True, slots=True)
class _Callback:
    """A selector key's data: call `function(connection, fileobj)`."""

    function: Callable[[Connection, Any], None]
    connection: Connection

    def __call__(self, fileobj: Any) -> None:
        self.function(self.connection, fileobj)


def _discard(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _probe_answer(probe: Probe, data: bytearray) -> bytes:
    try:
        reply = probe()
    except Exception:
        log.exception("a probe failed")
        reply = Reply(500, b"internal error\n")
    head = (
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\nContent-Type: {reply.content_type}\r\n"
        f"Content-Length: {len(reply.body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head if data.startswith(b"HEAD ") else head + reply.body


_REASONS = {200: "OK", 500: "Internal Server Error", 503: "Service Unavailable"}


# -- routes ----------------------------------------------------------------------------------------------


class HTTPService:
    """Serves `routes` on `listen` from a `BoundedServer` until stop(); the GET routes of `probes` from its loop."""

    def __init__(
        self,
        listen: str,
        routes: Mapping[tuple[str, str], Route],
        *,
        max_body: int = 64 * 1024,
        name: str = "http",
        loopback_only: bool = False,
        timeout: float = 10.0,
        max_connections: int = 32,
        per_address: int = 64,
        head_seconds: float = HEAD_SECONDS,
        probes: tuple[str, ...] = (),
    ) -> None:
        handler = _handler(dict(routes), max_body, loopback_only, timeout)
        answered = {path: _probe(routes[("GET", path)], path) for path in probes}
        self._server = BoundedServer(
            listen,
            handler,
            threads=max_connections,
            per_address=per_address,
            head_seconds=head_seconds,
            max_body=max_body,
            probes=answered,
            bodies_from=(lambda peer: is_loopback(peer)) if loopback_only else None,
            name=name,
        )
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (useful when `listen` asked for port 0)."""
        return self._server.port

    @property
    def open_connections(self) -> int:
        """Connections open now."""
        return self._server.open_connections

    @property
    def busy(self) -> int:
        """Requests being answered now."""
        return self._server.busy

    def start(self) -> HTTPService:
        """Start serving in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name=self._name, daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Whether the serving thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop accepting requests and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()


def _probe(route: Route, path: str) -> Probe:
    return lambda: route(Request("GET", path, {}, b"", "loop"))


def _handler(
    routes: dict[tuple[str, str], Route], max_body: int, loopback_only: bool, timeout: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(GatheredHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        do_POST = do_GET

        def _serve(self) -> None:
            peer = self.client_address[0]
            if loopback_only and not is_loopback(peer):
                self._refuse(Reply(403, b"this port serves loopback clients only\n"))
                return
            length = self._body_length()
            if isinstance(length, Reply):
                self._refuse(length)
                return
            body = self.rfile.read(length) if length else b""
            url = urllib.parse.urlsplit(self.path)
            route = routes.get((self.command, url.path))
            if route is None:
                known = any(path == url.path for _, path in routes)
                self._send(Reply(405 if known else 404, b"no such route\n"))
                return
            query = {key: values[-1] for key, values in urllib.parse.parse_qs(url.query).items()}
            try:
                reply = route(Request(self.command, url.path, query, body, peer))
            except Exception:
                log.exception("route %s %s failed", self.command, url.path)
                reply = Reply(500, b"internal error\n")
            self._send(reply)

        def _body_length(self) -> int | Reply:
            """The declared body length, or the 4xx answer to a length that is missing, malformed or too large."""
            if self.headers.get("Transfer-Encoding") is not None:
                return Reply(400, b"Transfer-Encoding is not accepted; send a Content-Length\n")
            declared = {value.strip() for value in self.headers.get_all("Content-Length") or ()}
            if not declared:
                return 0
            text = declared.pop()
            if declared or not _LENGTH.fullmatch(text):
                return Reply(400, b"Content-Length must be one whole number of bytes\n")
            if int(text) > max_body:
                return Reply(413, f"the body is larger than {max_body} bytes\n".encode())
            return int(text)

        def _refuse(self, reply: Reply) -> None:
            """Answer without reading the body, and close the connection (what follows is not a request)."""
            self.close_connection = True
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)

    Handler.timeout = timeout  # every write of an answer (its request was read by the loop)
    return Handler
