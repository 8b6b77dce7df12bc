"""A small threaded HTTP server routing (method, path) to plain functions: the warmer's hint and metrics ports.

The warmer answers a handful of routes on two ports; the standard library's server is enough for that
and keeps the sidecar free of a WSGI stack. It holds no client past its welcome: a connection that sends
nothing for `timeout` seconds is dropped, at most `max_connections` are served at once (the next ones get
503 and are closed), a Content-Length that is not a whole number up to `max_body` is refused before any
body is read (as is a chunked body), and a `loopback_only` service refuses other peers before reading
anything more. Every request is read whole before its route runs, and a route that raises answers 500
rather than dropping the connection.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
_LENGTH = re.compile(r"[0-9]{1,18}")
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class _BoundedServer(ThreadingHTTPServer):
    """A threading server that serves at most `slots` connections at once and turns the rest away with 503."""

    daemon_threads = True
    request_queue_size = 64  # connections waiting to be accepted (and served or turned away at once)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], slots: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(slots)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


BoundedServer = _BoundedServer  # for a handler of its own that streams (the node agent's fallback)


class HTTPService:
    """Serves `routes` on `listen` from daemon threads until stop()."""

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
    ) -> None:
        handler = _handler(dict(routes), max_body, loopback_only, timeout)
        self._server = _BoundedServer(split_listen(listen), handler, max_connections)
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (useful when `listen` asked for port 0)."""
        return self._server.server_address[1]

    def start(self) -> HTTPService:
        """Start serving in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name=self._name, daemon=True
        )
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


def _handler(
    routes: dict[tuple[str, str], Route], max_body: int, loopback_only: bool, timeout: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

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

    Handler.timeout = timeout  # every read and write of a connection, its request line first
    return Handler
