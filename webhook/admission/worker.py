"""gunicorn's gthread worker with an accept path that slow clients cannot block.

The stock gthread worker hands a connection to a thread as soon as one byte arrives, and that thread
then does the TLS handshake and reads the request with blocking calls and no time limit: a few dozen
connections that trickle a ClientHello (or a request) a byte at a time hold every thread, and reviews
from the API server wait behind them. Here the worker's event loop does the handshake and gathers the
whole request without blocking, within `ARRIVAL_SECONDS` per request; only a connection with a complete
request waiting ever reaches a thread, and its socket has a timeout there, so a client that stops
reading its answer frees the thread too. When the worker is full, the oldest connection still arriving
is closed to make room, so stalled connections cannot keep the accept path shut either.
"""

from __future__ import annotations

import errno
import selectors
import socket
import ssl
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.sock import ssl_context
from gunicorn.workers.gthread import TConn, ThreadWorker

ARRIVAL_SECONDS = 5.0  # from accepting a connection (or a kept-alive one's next byte) to a whole request
SOCKET_TIMEOUT_SECONDS = 10.0  # any one blocking read or write in a thread, answering included
DRAIN_SECONDS = 0.2  # for a body the application left unread: it was gathered already, or never comes
HEADER_LIMIT_BYTES = 64 * 1024  # past this without the end of the head, the request goes on to be refused
_READ_BYTES = 64 * 1024


class TimedSSLSocket(ssl.SSLSocket):
    """An SSL socket whose blocking mode has a timeout: gunicorn sets `setblocking(True)` before it reads."""

    def setblocking(self, flag: bool) -> None:
        self.settimeout(SOCKET_TIMEOUT_SECONDS if flag else 0.0)


@dataclass(eq=False)
class _Arrival:
    """A connection whose request is still arriving: handshake state, bytes so far, and its deadline."""

    conn: TConn
    deadline: float
    handshaken: bool
    data: bytearray
    writing: bool = False  # the handshake waits to write, not to read
    registered: bool = False  # with the event loop's poller


class GuardedThreadWorker(ThreadWorker):
    """A gthread worker whose threads only ever see a connection with a whole request waiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: dict[_Arrival, None] = {}  # oldest first: insertion order is deadline order
        self.max_body_bytes = self.app.config.webhook.max_request_bytes

    def accept(self, listener: socket.socket) -> None:
        """Take a connection and start its handshake in the event loop, closing the oldest arrival if full."""
        try:
            client, address = listener.accept()
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())  # non-blocking from here on
        if self.cfg.is_ssl:
            context = ssl_context(self.cfg)
            context.sslsocket_class = TimedSSLSocket
            conn.sock = context.wrap_socket(
                client,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
            )
        conn.parser = http.get_parser(self.cfg, conn.sock, address)
        conn.initialized = True  # TConn.init has nothing left to do: the handshake is ours
        self._gather(conn, handshaken=not self.cfg.is_ssl)
        if self.nr_conns >= self.worker_connections and len(self.arrivals) > 1:
            self._drop(next(iter(self.arrivals)))

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection's next request has started: gather it before it may take a thread."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._gather(conn, handshaken=True)

    def murder_pending(self) -> None:
        """Close connections whose request did not arrive whole in time, besides gunicorn's own pending ones."""
        super().murder_pending()
        now = time.monotonic()
        while self.arrivals and (oldest := next(iter(self.arrivals))).deadline <= now:
            self._drop(oldest)

    def _keepalive_after(self, conn: TConn, keepalive: bool) -> bool:
        """Keep the connection when the unread rest of the body drains at once (gunicorn waits 5 s for it).

        Requests reach a thread whole, so what is left is buffered; a body declared too large to read
        (a 413) is not waited for, or a client announcing gigabytes would hold the thread.
        """
        return keepalive and bool(conn.parser.finish_body(deadline=time.monotonic() + DRAIN_SECONDS))

    # -- arrivals --------------------------------------------------------------------------------------

    def _gather(self, conn: TConn, handshaken: bool) -> None:
        arrival = _Arrival(conn, time.monotonic() + ARRIVAL_SECONDS, handshaken, bytearray())
        self.arrivals[arrival] = None
        conn.sock.setblocking(False)
        self._progress(arrival, None)  # a kept-alive request (or a ClientHello) is usually there already

    def _progress(self, arrival: _Arrival, _fileobj: Any) -> None:
        """Advance the handshake and read what has come; hand the connection on once a request is whole."""
        sock = arrival.conn.sock
        try:
            if not arrival.handshaken:
                sock.do_handshake()
                arrival.handshaken = True
            while not request_complete(arrival.data, self.max_body_bytes):
                chunk = sock.recv(_READ_BYTES)
                if not chunk:
                    self._drop(arrival)
                    return
                arrival.data += chunk
        except ssl.SSLWantReadError:
            self._wait(arrival, writing=False)
            return
        except ssl.SSLWantWriteError:
            self._wait(arrival, writing=True)
            return
        except (OSError, ValueError):
            self._drop(arrival)
            return
        self._dispatch(arrival)

    def _wait(self, arrival: _Arrival, writing: bool) -> None:
        """Have the event loop call `_progress` again once the socket can go on (read, or write for TLS)."""
        events = selectors.EVENT_WRITE if writing else selectors.EVENT_READ
        if not arrival.registered:
            self.poller.register(arrival.conn.sock, events, partial(self._progress, arrival))
            arrival.registered = True
        elif writing != arrival.writing:
            self.poller.modify(arrival.conn.sock, events, partial(self._progress, arrival))
        arrival.writing = writing

    def _dispatch(self, arrival: _Arrival) -> None:
        del self.arrivals[arrival]
        conn = arrival.conn
        if arrival.registered:
            self.poller.unregister(conn.sock)
        conn.parser.unreader.unread(bytes(arrival.data))
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop(self, arrival: _Arrival) -> None:
        del self.arrivals[arrival]
        if arrival.registered:
            try:
                self.poller.unregister(arrival.conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        self.nr_conns -= 1
        arrival.conn.close()


def request_complete(data: bytes | bytearray, max_body_bytes: int) -> bool:
    """Whether `data` holds a whole HTTP/1.1 request, or enough that a thread may answer it at once.

    Whole: the head and a Content-Length body, or a chunked body up to its last chunk. At once: a head
    too long, or a body declared larger than the webhook accepts (it is refused without being read).
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > HEADER_LIMIT_BYTES
    headers = bytes(data[:end]).lower()
    if b"\ntransfer-encoding:" in headers and b"chunked" in headers:
        return data.endswith(b"0\r\n\r\n") or len(data) - end - 4 > max_body_bytes
    for line in headers.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return True  # gunicorn refuses it
            return length < 0 or length > max_body_bytes or len(data) - end - 4 >= length
    return True
