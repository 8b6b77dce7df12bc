"""Total deadlines on registry exchanges, which read timeouts alone cannot give.

A read timeout bounds each wait for bytes; a server trickling one byte a second never trips it and holds
the caller for as long as it likes, in the TLS handshake, the headers or the body. So the connections
of the registry client carry the deadline of the exchange they serve (`deadline_scope`, set by the
thread that sends), and one watchdog thread shuts down the socket of any connection still armed when
its deadline passes: the blocked read returns at once and the caller gets its error and its thread back.
A connection is disarmed when its response is released, or re-armed by its next request.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import urllib3.connection
import urllib3.connectionpool

_scope = threading.local()


@contextlib.contextmanager
def deadline_scope(deadline: float | None) -> Iterator[None]:
    """Connections opened or sent on by this thread inside the block are shut down at `deadline` (monotonic)."""
    previous = getattr(_scope, "deadline", None)
    _scope.deadline = deadline
    try:
        yield
    finally:
        _scope.deadline = previous


class _Watchdog:
    """One thread per process that shuts down armed connections at their deadlines; bounded by what is in flight."""

    def __init__(self) -> None:
        self._armed: dict[int, tuple[urllib3.connection.HTTPConnection, float]] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, connection: urllib3.connection.HTTPConnection) -> None:
        """Arm `connection` with the current thread's deadline (or disarm it when there is none)."""
        deadline = getattr(_scope, "deadline", None)
        with self._wake:
            if deadline is None:
                self._armed.pop(id(connection), None)
                return
            self._armed[id(connection)] = (connection, deadline)
            if self._thread is None or not self._thread.is_alive():  # also after a fork: threads do not survive it
                self._thread = threading.Thread(target=self._run, name="registry-deadlines", daemon=True)
                self._thread.start()
            self._wake.notify()

    def disarm(self, connection: object) -> None:
        """Forget `connection`: its exchange is over."""
        with self._wake:
            self._armed.pop(id(connection), None)

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                expired = [conn for conn, deadline in self._armed.values() if deadline <= now]
                for conn in expired:
                    del self._armed[id(conn)]
                if not expired:
                    soonest = min((deadline for _, deadline in self._armed.values()), default=None)
                    self._wake.wait(None if soonest is None else soonest - now)
                    continue
            for conn in expired:
                sock = conn.sock
                if sock is not None:
                    with contextlib.suppress(OSError):  # the plain socket's shutdown, under TLS too
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)


WATCHDOG = _Watchdog()


class _Armed:
    """Arms the connection with the sending thread's deadline before it connects and before each request."""

    def connect(self) -> None:
        WATCHDOG.arm(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]

    def request(self, *args: object, **kwargs: object) -> None:
        WATCHDOG.arm(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Armed, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Armed, urllib3.connection.HTTPSConnection):
    pass


class _HTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


POOL_CLASSES = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}
