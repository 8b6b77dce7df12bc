"""One client connection of the front, as the server hands it over: read a request, let the Front answer it.

The server builds a handler class per port with the Front set on it (`front`): FrontRequestHandler on the
port nodes use, PeerRequestHandler on the peer port. The handler is the Front's only way to the socket:
heads (each counted by route and status), bodies from memory, from the CCR (spliced in the kernel where it
can be), or from a file, the spool's or the registry's own (sendfile), and `fail`, which answers an error
through the one table (`answers.ANSWERS`) or, once a head has gone out, cuts the connection so the client
sees a broken download.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import BinaryIO

import urllib3

from webhook.front.answers import PullOnly, answer_for, answer_headers, error_body
from webhook.front.app import Front
from webhook.front.flights import CHUNK_BYTES
from webhook.front.held import send_file
from webhook.front.peer_server import handle_peer
from webhook.front.splice import relay


class FrontRequestHandler(BaseHTTPRequestHandler):
    """One connection's requests on the node-facing port; the Front is set on the class by the server."""

    protocol_version = "HTTP/1.1"
    timeout = 120  # a client that reads none of an answer for this long is dropped (its head was read by the loop)
    front: Front
    server_version = "ccr-front"
    route = "other"  # the metrics label of the request being answered, set once its route is known

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(lambda: self.front.handle(self))

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self.close_connection = True
        self._answer(self._refuse_write)

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _refuse_write(self) -> None:
        raise PullOnly("the CCR front serves pulls only")

    def _answer(self, work: Callable[[], None]) -> None:
        """Run `work` for this request; an error it raises is answered by the table (or cuts a started answer)."""
        self._started = time.monotonic()
        self._first_byte = self._head_sent = False
        self.route = "other"
        try:
            work()
        except Exception as err:
            if answer_for(err) is None:
                raise
            self.fail(err)

    def fail(self, error: Exception) -> None:
        """Answer `error` as the table says; cut the connection instead when the head has gone out already."""
        answer = answer_for(error)
        assert answer is not None, f"no answer for {type(error).__name__}"
        if self._head_sent:
            return self.cut()
        body = error_body(answer.code, str(error))
        self.send_head(answer.status, answer_headers(error, answer, body))
        if self.command != "HEAD":
            self.wfile.write(body)
        return None

    def send_head(self, status: int, headers: dict[str, str]) -> None:
        """The status line and headers, with `Connection: close` when this answer ends the connection."""
        self._head_sent = True
        self.count(status)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection and "Connection" not in headers:
            self.send_header("Connection", "close")
        self.end_headers()

    def count(self, status: int) -> None:
        """Count the answer by route and status (`ccr_front_requests_total`)."""
        self.front.metrics.count_request(self.route, status)

    def send_body(self, data: bytes, source: str) -> None:
        """A body held in memory."""
        self._sent(len(data), source)
        self.wfile.write(data)

    def stream(self, response: urllib3.BaseHTTPResponse, source: str) -> bool:
        """The body of `response` (in the kernel where possible); True if urllib3 read it (connection reusable)."""
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and relay(response, self.connection, int(length), lambda count: self._sent(count, source)):
            return False
        while data := response.read(CHUNK_BYTES, decode_content=False):
            self._sent(len(data), source)
            self.wfile.write(data)
        return True

    def send_file(self, file: BinaryIO, offset: int, count: int, source: str) -> None:
        """`count` bytes of `file` at `offset` (sendfile where the socket allows it, large pieces over TLS)."""
        self._sent(count, source)
        send_file(self.connection, file, offset, count)

    def _sent(self, count: int, source: str) -> None:
        if not self._first_byte and count:
            self._first_byte = True
            self.front.metrics.first_byte.observe(time.monotonic() - self._started)
        self.front.metrics.served_bytes.labels(source).inc(count)

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        """A small complete answer."""
        self.send_head(status, {"Content-Type": content_type, "Content-Length": str(len(body))})
        if self.command != "HEAD":
            self.wfile.write(body)

    def cut(self) -> None:
        """Close the connection now, before the promised Content-Length: the client sees a broken download."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class PeerRequestHandler(FrontRequestHandler):
    """One peer connection's requests: authenticated by the shared secret, blobs only, counted as `peer`."""

    def do_GET(self) -> None:
        self._answer(lambda: handle_peer(self.front, self))

    do_HEAD = FrontRequestHandler.do_POST

    def _sent(self, count: int, source: str) -> None:
        super()._sent(count, "peer")
