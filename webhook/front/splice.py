"""Passing a response body from the CCR registry to a node without copying it through Python.

Held blobs are most of what nodes pull, so the pass-through must not slow them: over plain sockets the
body moves socket to pipe to socket with splice(2), in the kernel; what the HTTP parser had buffered
already goes first. Over TLS (either side), or where the parts are not plain sockets, `relay` declines
and the caller copies in large pieces instead.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import ssl
from collections.abc import Callable

import urllib3

PIPE_BYTES = 1024 * 1024
_F_SETPIPE_SZ = 1031


def source_socket(response: urllib3.BaseHTTPResponse) -> socket.socket | None:
    """The plain socket `response` reads from, or None (TLS, or not an http.client response)."""
    parsed = getattr(response, "_fp", None)
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if parsed is None or not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
        return None
    return sock


def relay(
    response: urllib3.BaseHTTPResponse, destination: socket.socket, length: int, sent: Callable[[int], None]
) -> bool:
    """Move the `length`-byte body of `response` to `destination` in the kernel; False if it cannot (nothing sent).

    The source connection cannot be reused afterwards: the caller closes it. OSError if either side fails.
    """
    source = source_socket(response)
    if source is None or isinstance(destination, ssl.SSLSocket) or not hasattr(os, "splice"):
        return False
    buffered = response._fp.fp  # type: ignore[attr-defined]  # http.client's BufferedReader over the socket
    timeout = max(source.gettimeout() or 60.0, destination.gettimeout() or 60.0)
    ahead = buffered.peek(0)[:length] if length else b""
    if ahead:
        buffered.read(len(ahead))
        sent(len(ahead))
        destination.sendall(ahead)
    remaining = length - len(ahead)
    reader, writer = os.pipe()
    try:
        fcntl.fcntl(writer, _F_SETPIPE_SZ, PIPE_BYTES)
        while remaining > 0:
            moved = _splice(source.fileno(), writer, min(remaining, PIPE_BYTES), select.POLLIN, timeout)
            if moved == 0:
                raise ConnectionError(f"the CCR registry closed the connection with {remaining} bytes to go")
            sent(moved)
            remaining -= moved
            while moved > 0:
                moved -= _splice(reader, destination.fileno(), moved, select.POLLOUT, timeout)
    finally:
        os.close(reader)
        os.close(writer)
    return True


def _splice(source: int, target: int, count: int, wait_for: int, timeout: float) -> int:
    """One splice(2) of up to `count` bytes, waiting (up to `timeout`) while a non-blocking socket is not ready."""
    for _ in range(1000):
        try:
            return os.splice(source, target, count, flags=os.SPLICE_F_MOVE)
        except BlockingIOError:
            fd = source if wait_for == select.POLLIN else target
            poller = select.poll()
            poller.register(fd, wait_for)
            if not poller.poll(timeout * 1000):
                raise TimeoutError(f"no progress within {timeout:g} s") from None
    raise TimeoutError("the socket stayed busy")
