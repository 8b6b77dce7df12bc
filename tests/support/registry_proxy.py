"""A fault-injecting HTTP front for a real registry, so tests can see what the client does when things go wrong.

It forwards every request to the registry unchanged (keeping the Host header, so the registry's Location
headers point back at the proxy) and records (method, path, Authorization) and the Host of each; with
`tls` it serves HTTPS (a context holding the certificate of its `name`). Set its attributes to refuse
monolithic uploads, make Locations relative, redirect blob downloads, cut blob downloads in half, slow blob
downloads down, trickle chosen blobs a few bytes at a time, answer the next requests with given statuses
(or DROP: an answer that announces 100 bytes, sends 10 and closes the connection), or serve manifests of
its own (`serve`: hostile ones no registry would take, made as they are sent). Blob downloads can also be
paced (`blob_bytes_per_second`), held after their first half until `blob_gate` is set, or served with their
last byte changed (`corrupt_blobs`: same length, wrong digest); manifest requests can be held until
`manifest_gate` is set. With `referrers_api` it lends the registry (distribution 2.8 has none) the OCI 1.1
referrers API, answered from the registry's own `sha256-<hex>` tag index (an empty index without one).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from tests.support.loopback_server import LoopbackServer, QuietHandler

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}
_BLOB_GET = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
_MANIFEST = re.compile(r"^/v2/(.+)/manifests/([^/]+)$")
_REFERRERS = re.compile(r"^/v2/(.+)/referrers/sha256:([0-9a-f]{64})$")
_EMPTY_INDEX = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
_SPACES = memoryview(b" " * 65536)
DROP = -1  # a fault status: the connection closes mid-response


class PaddedManifest:
    """A manifest the proxy serves itself: `document` as JSON, then `padding` spaces (the same JSON still),
    made as it is sent so that even megabytes of it cost the test no memory."""

    def __init__(self, document: dict[str, Any], padding: int = 0) -> None:
        self.media_type: str = document["mediaType"]
        self._head = json.dumps(document).encode()
        self._padding = padding
        self.size = len(self._head) + padding
        hasher = hashlib.sha256()
        for chunk in self.chunks():
            hasher.update(chunk)
        self.digest = f"sha256:{hasher.hexdigest()}"

    def chunks(self) -> Iterator[bytes | memoryview]:
        yield self._head
        remaining = self._padding
        while remaining > 0:
            piece = _SPACES[: min(remaining, len(_SPACES))]
            remaining -= len(piece)
            yield piece

    def descriptor(self) -> dict[str, Any]:
        """Its descriptor, for an index that lists it."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


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
        self.trickled_blobs: set[str] = set()  # digests whose downloads come `trickle_bytes_per_second` slowly
        self.trickle_bytes_per_second = 20.0
        self.manifests: dict[tuple[str, str], PaddedManifest] = {}  # (repository, reference) served by the proxy
        self._stopping = threading.Event()
        self.blob_bytes_per_second = 0.0  # pace blob downloads (0: as fast as the socket takes them)
        self.blob_gate: threading.Event | None = None  # when set: blob downloads stop at half until it is set
        self.corrupt_blobs = False
        self.manifest_gate: threading.Event | None = None  # when not None: manifest requests wait until it is set
        self.gate_seconds = 60.0  # a gate never set lets go after this, so a broken test cannot hang
        self.referrers_api = False
        super().__init__(self._handler_class(), tls)

    def serve(self, repository: str, manifest: PaddedManifest, *tags: str) -> PaddedManifest:
        """Answer GET and HEAD for `manifest` in `repository` by its digest and `tags`, without the registry."""
        for reference in (manifest.digest, *tags):
            self.manifests[(repository, reference)] = manifest
        return manifest

    def stop(self) -> None:
        self._stopping.set()  # ends the trickles still running
        super().stop()

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
                listing = _REFERRERS.match(path) if proxy.referrers_api and self.command == "GET" else None
                if listing:
                    return self._referrers(*listing.groups())
                served = _MANIFEST.match(path)
                if served and proxy.manifest_gate is not None:
                    proxy.manifest_gate.wait(proxy.gate_seconds)
                manifest = served and proxy.manifests.get((served.group(1), served.group(2)))
                if manifest and self.command in ("GET", "HEAD"):
                    return self._serve_manifest(manifest)
                if self.command == "GET" and _BLOB_GET.match(path) and proxy.redirect_blobs_to:
                    return self._reply(307, {"Location": proxy.redirect_blobs_to + self.path}, b"")
                if self.command == "PUT" and "/blobs/uploads/" in path and length and proxy.refuse_monolithic_put:
                    return self._reply(416, {}, b"")
                if self.command == "GET" and _BLOB_GET.match(path) and proxy.blob_delay_seconds:
                    time.sleep(proxy.blob_delay_seconds)
                status, headers, data = self._forward(body)
                if self.command == "GET" and path.rpartition("/")[2] in proxy.trickled_blobs and status == 200:
                    return self._trickle(headers, data)
                if self.command == "GET" and _BLOB_GET.match(path) and status == 200:
                    return self._reply_blob(headers, data)
                return self._reply(status, headers, data)

            def _reply_blob(self, headers: dict[str, str], data: bytes) -> None:
                if proxy.corrupt_blobs and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                self.send_response(200)
                for key, value in headers.items():
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                half = len(data) // 2
                end = half if proxy.truncate_blobs else len(data)
                position, piece = 0, 64 * 1024
                while position < end:
                    stop = min(position + piece, end)
                    held = proxy.blob_gate is not None and position < half <= stop
                    stop = half if held else stop
                    self.wfile.write(data[position:stop])
                    if held and proxy.blob_gate is not None:
                        self.wfile.flush()
                        proxy.blob_gate.wait(proxy.gate_seconds)
                    elif proxy.blob_bytes_per_second:
                        time.sleep((stop - position) / proxy.blob_bytes_per_second)
                    position = stop
                if proxy.truncate_blobs:
                    self.close_connection = True

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

            def _referrers(self, repository: str, hexdigest: str) -> None:
                """The referrers list of a manifest: the registry's index of the referrers tag schema, or none."""
                self.path = f"/v2/{repository}/manifests/sha256-{hexdigest}"
                status, _, data = self._forward(b"")
                index = data if status == 200 else json.dumps(_EMPTY_INDEX).encode()
                self._reply(200, {"Content-Type": _EMPTY_INDEX["mediaType"]}, index)

            def _serve_manifest(self, manifest: PaddedManifest) -> None:
                self.send_response(200)
                self.send_header("Content-Type", manifest.media_type)
                self.send_header("Docker-Content-Digest", manifest.digest)
                self.send_header("Content-Length", str(manifest.size))
                self.end_headers()
                if self.command == "GET":
                    for chunk in manifest.chunks():
                        self.wfile.write(chunk)

            def _trickle(self, headers: dict[str, str], data: bytes) -> None:
                """Send `data` four bytes at a time at the trickle rate, until it is all out, the client goes or
                the proxy stops."""
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.close_connection = True
                for start in range(0, len(data), 4):
                    if proxy._stopping.wait(4 / proxy.trickle_bytes_per_second):
                        return
                    try:
                        self.wfile.write(data[start : start + 4])
                        self.wfile.flush()
                    except OSError:
                        return

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
