"""A small threaded HTTP server routing (method, path) to plain functions: the warmer's hint and metrics ports.

The warmer answers a handful of routes on two ports; the standard library's server is enough for that
and keeps the sidecar free of a WSGI stack. Every request is read whole (up to `max_body` bytes) before
its route runs, and a route that raises answers 500 rather than dropping the connection.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
log = logging.getLogger("webhook.http_service")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as a route sees it."""

    method: str
    path: str
    query: Mapping[str, str]
    body: bytes
    peer: str  # the client's IP address

    @property
    def from_loopback(self) -> bool:
        """Whether the request came from this host (127.0.0.0/8, ::1)."""
        try:
            return ipaddress.ip_address(self.peer.removeprefix("::ffff:")).is_loopback
        except ValueError:
            return False


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


class HTTPService:
    """Serves `routes` on `listen` from daemon threads until stop()."""

    def __init__(
        self, listen: str, routes: Mapping[tuple[str, str], Route], *, max_body: int = 64 * 1024, name: str = "http"
    ) -> None:
        host, port = split_listen(listen)
        server_class = type(
            "Server",
            (ThreadingHTTPServer,),
            {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET, "daemon_threads": True},
        )
        self._server = server_class((host, port), _handler(dict(routes), max_body))
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


def _handler(routes: dict[tuple[str, str], Route], max_body: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        do_POST = do_GET

        def _serve(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            route = routes.get((self.command, url.path))
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_body:
                self.close_connection = True
                self._send(Reply(413, f"the body is larger than {max_body} bytes\n".encode()))
                return
            body = self.rfile.read(length) if length else b""
            if route is None:
                known = any(path == url.path for _, path in routes)
                self._send(Reply(405 if known else 404, b"no such route\n"))
                return
            query = {key: values[-1] for key, values in urllib.parse.parse_qs(url.query).items()}
            try:
                reply = route(Request(self.command, url.path, query, body, self.client_address[0]))
            except Exception:
                log.exception("route %s %s failed", self.command, url.path)
                reply = Reply(500, b"internal error\n")
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

    return Handler
