"""A fault-injecting HTTP front for a real registry, so tests can see what the client does when things go wrong.

It forwards every request to the registry unchanged (keeping the Host header, so the registry's Location
headers point back at the proxy) and records (method, path, Authorization) and the Host of each; with
`tls` it serves HTTPS (a context holding the certificate of its `name`). Set its attributes
to refuse monolithic uploads, make Locations relative, redirect blob downloads, cut blob downloads in
half, slow blob downloads down, or answer the next requests with given statuses (or DROP: an answer that
announces 100 bytes, sends 10 and closes the connection).
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
import urllib.parse

from tests.support.loopback_server import LoopbackServer, QuietHandler

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}
_BLOB_GET = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
DROP = -1  # a fault status: the connection closes mid-response


class RegistryProxy(LoopbackServer):
    """A threaded proxy on 127.0.0.1 in front of `upstream` (host:port); `name` is the host it calls itself."""

    def __init__(self, upstream: str, name: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream
        self.name = name
        self.requests: list[tuple[str, str, str | None]] = []
        self.hosts: list[str | None] = []  # the Host header of each request
        self.faults: list[tuple[int, dict[str, str]]] = []
        self.refuse_monolithic_put = False
        self.relative_locations = False
        self.redirect_blobs_to: str | None = None
        self.truncate_blobs = False
        self.blob_delay_seconds = 0.0  # each blob download waits this long before its answer starts
        super().__init__(self._handler_class(), tls)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.name}:{self.port}"

    def _handler_class(self) -> type[QuietHandler]:
        proxy = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self._handle()

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                assert "chunked" not in (self.headers.get("Transfer-Encoding") or ""), "the client must send lengths"
                body = self.rfile.read(length) if length else b""
                proxy.requests.append((self.command, self.path, self.headers.get("Authorization")))
                proxy.hosts.append(self.headers.get("Host"))
                if len(body) < length:  # the client gave up mid-body: so does the proxy, as a registry would
                    self.close_connection = True
                    return None
                path = urllib.parse.urlsplit(self.path).path
                if proxy.faults:
                    status, headers = proxy.faults.pop(0)
                    return self._drop() if status == DROP else self._reply(status, headers, b"")
                if self.command == "GET" and _BLOB_GET.match(path) and proxy.redirect_blobs_to:
                    return self._reply(307, {"Location": proxy.redirect_blobs_to + self.path}, b"")
                if self.command == "PUT" and "/blobs/uploads/" in path and length and proxy.refuse_monolithic_put:
                    return self._reply(416, {}, b"")
                if self.command == "GET" and _BLOB_GET.match(path) and proxy.blob_delay_seconds:
                    time.sleep(proxy.blob_delay_seconds)
                status, headers, data = self._forward(body)
                if self.command == "GET" and _BLOB_GET.match(path) and proxy.truncate_blobs and status == 200:
                    self._reply(status, headers, data[: len(data) // 2], length=len(data))
                    self.close_connection = True
                    return None
                return self._reply(status, headers, data)

            def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    answer = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
                    if self.command == "HEAD" and response.getheader("Content-Length"):
                        answer["Content-Length"] = response.getheader("Content-Length")
                    if proxy.relative_locations and "Location" in answer:
                        parts = urllib.parse.urlsplit(answer["Location"])
                        answer["Location"] = urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
                    return response.status, answer, data
                finally:
                    connection.close()

            def _drop(self) -> None:
                self._reply(200, {"Content-Type": "application/json"}, b"{" * 10, length=100)
                self.close_connection = True

            def _reply(self, status: int, headers: dict[str, str], data: bytes, length: int | None = None) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                declared = headers.get("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", declared or str(len(data) if length is None else length))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        return Handler
