"""gunicorn's gthread worker with an accept path that slow clients cannot block.

The stock gthread worker hands a connection to a thread as soon as one byte arrives, and that thread
then does the TLS handshake and reads the request with blocking calls and no time limit: a few dozen
connections that trickle a ClientHello (or a request) a byte at a time hold every thread, and reviews
from the API server wait behind them. Here the worker's event loop does the handshake and gathers the
whole request without blocking, within `ARRIVAL_SECONDS` per request; only a connection with a complete
request waiting ever reaches a thread, and its socket has a timeout there, so a client that stops
reading its answer frees the thread too. When the worker is full, the oldest connection still arriving
is closed to make room, so stalled connections cannot keep the accept path shut either. A request
refused before its body arrived closes its connection, and a closing connection's last bytes are read
by the event loop without blocking it (gunicorn's graceful close blocks the loop for up to 2 s).
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

from gunicorn import http, util
from gunicorn.sock import ssl_context
from gunicorn.workers.gthread import TConn, ThreadWorker

from webhook.http_service import HEADER_LIMIT_BYTES, Arrived, Gathering, Want

ARRIVAL_SECONDS = 5.0  # from accepting a connection (or a kept-alive one's next byte) to a whole request
SOCKET_TIMEOUT_SECONDS = 10.0  # any one blocking read or write in a thread, answering included
DRAIN_SECONDS = 1.0  # for a body the application left unread: it was gathered whole, so this is a backstop
LINGER_SECONDS = 2.0  # gunicorn's time for reading what a client still sends after the answer


class TimedSSLSocket(ssl.SSLSocket):
    """An SSL socket whose blocking mode has a timeout: gunicorn sets `setblocking(True)` before it reads."""

    def setblocking(self, flag: bool) -> None:
        self.settimeout(SOCKET_TIMEOUT_SECONDS if flag else 0.0)


@dataclass(eq=False)
class _Arrival:
    """A connection whose request is still arriving: handshake state, bytes so far, and its deadline."""

    conn: TConn
    deadline: float
    gathering: Gathering
    writing: bool = False  # the handshake waits to write, not to read
    registered: bool = False  # with the event loop's poller


@dataclass(eq=False)
class _Lingering:
    """A connection closed for writing whose client's last bytes are read (and dropped) until it closes too."""

    sock: socket.socket
    deadline: float
    drained: int = 0


class _Conn(TConn):
    """gunicorn's connection, closed gracefully without blocking: its lingering read is left to the event loop.

    gunicorn's graceful close waits on the client for up to 2 s in the event loop's thread, so a client
    that neither reads nor closes would stop every other connection of the worker for that long.
    """

    def __init__(self, worker: GuardedThreadWorker, *args: Any) -> None:
        super().__init__(*args)
        self.worker = worker

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.linger(self.sock)
        else:
            super().close()


class GuardedThreadWorker(ThreadWorker):
    """A gthread worker whose threads only ever see a connection with a whole request waiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: dict[_Arrival, None] = {}  # oldest first: insertion order is deadline order
        self.lingering: dict[_Lingering, None] = {}  # the same
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
        conn = _Conn(self, self.cfg, client, address, listener.getsockname())  # non-blocking from here on
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
        while self.lingering and (done := next(iter(self.lingering))).deadline <= now:
            self._closed(done)

    def linger(self, sock: socket.socket) -> None:
        """Half-close `sock` (the answer is out), then read what the client still sends until it closes.

        Closing with unread bytes would make the kernel reset the connection, which can cut the answer
        short on the client's side (RFC 9112, 9.6); the reading is done by the event loop, within limits.
        """
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            util.close(sock)
            return
        lingering = _Lingering(sock, time.monotonic() + LINGER_SECONDS)
        self.lingering[lingering] = None
        self.poller.register(sock, selectors.EVENT_READ, partial(self._drain, lingering))

    def _drain(self, lingering: _Lingering, _fileobj: Any) -> None:
        try:
            while lingering.drained < self.max_body_bytes + HEADER_LIMIT_BYTES:  # a refused body, sent whole
                chunk = lingering.sock.recv(4096)
                if not chunk:
                    break
                lingering.drained += len(chunk)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return
        except (OSError, ValueError):
            pass
        self._closed(lingering)

    def _closed(self, lingering: _Lingering) -> None:
        del self.lingering[lingering]
        try:
            self.poller.unregister(lingering.sock)
        except (KeyError, ValueError, OSError):
            pass
        util.close(lingering.sock)

    def _keepalive_after(self, conn: TConn, keepalive: bool) -> bool:
        """Keep the connection when the rest of its request was gathered (gunicorn would wait 5 s for it).

        A request refused before its body arrived (413) closes the connection: draining would wait on a
        client that may announce gigabytes and send a byte a second, holding the thread.
        """
        if not getattr(conn, "whole_request", True):
            return False
        return keepalive and bool(conn.parser.finish_body(deadline=time.monotonic() + DRAIN_SECONDS))

    # -- arrivals --------------------------------------------------------------------------------------

    def _gather(self, conn: TConn, handshaken: bool) -> None:
        arrival = _Arrival(conn, time.monotonic() + ARRIVAL_SECONDS, Gathering(conn.sock, handshaken))
        self.arrivals[arrival] = None
        conn.sock.setblocking(False)
        self._progress(arrival, None)  # a kept-alive request (or a ClientHello) is usually there already

    def _progress(self, arrival: _Arrival, _fileobj: Any) -> None:
        """Advance the handshake and read what has come; hand the connection on once a request is whole."""
        state = arrival.gathering.advance(self.max_body_bytes)
        if state is Want.GONE:
            self._drop(arrival)
        elif isinstance(state, Want):
            self._wait(arrival, writing=state is Want.WRITE)
        else:
            self._dispatch(arrival, state)

    def _wait(self, arrival: _Arrival, writing: bool) -> None:
        """Have the event loop call `_progress` again once the socket can go on (read, or write for TLS)."""
        events = selectors.EVENT_WRITE if writing else selectors.EVENT_READ
        if not arrival.registered:
            self.poller.register(arrival.conn.sock, events, partial(self._progress, arrival))
            arrival.registered = True
        elif writing != arrival.writing:
            self.poller.modify(arrival.conn.sock, events, partial(self._progress, arrival))
        arrival.writing = writing

    def _dispatch(self, arrival: _Arrival, state: Arrived) -> None:
        del self.arrivals[arrival]
        conn = arrival.conn
        conn.whole_request = state is Arrived.WHOLE
        if arrival.registered:
            self.poller.unregister(conn.sock)
        conn.parser.unreader.unread(bytes(arrival.gathering.data))
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
