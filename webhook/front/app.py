"""The front's HTTP handling: the OCI distribution pull API (GET and HEAD), `/metrics` and `/healthz`.

Every manifest and blob request goes to the CCR registry first, with the node's own Authorization, so the
CCR's access control stays as it is; its answer is passed through and streamed in large pieces. Only a
404 for a repository under a configured upstream's prefix takes the miss path: the manifest from
upstream (verified), a blob from its flight (spooled, followed as it grows, cut short if the fetch fails).
Anything else, and every write method (the front is pull-only), never reaches an upstream.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

import urllib3

from webhook.config import Config
from webhook.front.commit import ImageCommits, commit_blob
from webhook.front.flights import CHUNK_BYTES, Flight, FlightFailed, Flights, Spool, SpoolFull
from webhook.front.metrics import FrontMetrics
from webhook.front.peers import Membership, Peers
from webhook.front.splice import relay
from webhook.front.upstream import Origin, UpstreamManifests, is_digest, origin_for
from webhook.registry.client import MAX_MANIFEST_BYTES, Registries
from webhook.registry.errors import NotFound, RegistryError, describe_transport_error
from webhook.registry.streams import release

log = logging.getLogger("webhook.front")
_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(?P<start>[0-9]*)-(?P<end>[0-9]*)$")
_FORWARDED_REQUEST = ("Accept", "Authorization", "Range", "If-None-Match", "If-Modified-Since")
_RELAYED_ANSWER = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "Docker-Content-Digest",
    "Docker-Distribution-Api-Version",
    "ETag",
    "Last-Modified",
    "Cache-Control",
    "Location",
    "Link",
    "WWW-Authenticate",
    "Retry-After",
)
RETRY_AFTER_SECONDS = 10
CCR_READ_TIMEOUT_SECONDS = 60.0
CCR_ATTEMPTS = 4  # a content request the CCR answers with a 5xx is asked again, 0.1 + 0.2 + 0.4 s apart at most
CCR_RETRY_SECONDS = 0.1


class Front:
    """The front's state: clients, spool, flights, commits, metrics; `handle` answers one request."""

    def __init__(self, config: Config, max_connections: int) -> None:
        self.config = config
        self.registries = Registries(config, through_front=False)  # the front is what others read through
        self.metrics = FrontMetrics()
        settings = config.front
        ccr = self.registries.ccr
        self.manifests = UpstreamManifests()
        self.peers = Peers(settings, Membership(settings), max_connections, self.metrics) if settings.peering else None
        self.flights = Flights(
            ccr,
            Spool(settings.spool_dir, settings.spool_max_bytes),
            self.metrics,
            max_concurrent_fetches=settings.max_concurrent_fetches,
            fetch_deadline_seconds=settings.fetch_deadline_seconds,
            min_bytes_per_second=settings.min_bytes_per_second,
            commit_blob=lambda flight: commit_blob(ccr, flight),
            open_blob=self.peers.open_blob if self.peers is not None else None,
        )
        if self.peers is not None:
            self.peers.membership.start()
        self.commits = ImageCommits(ccr, self.flights, self.manifests)
        self._ccr_pool = urllib3.PoolManager(
            maxsize=max_connections, block=False, ca_certs=config.ccr.ca_file or None, headers={}
        )

    def handle(self, request: FrontRequestHandler) -> None:
        """Answer one GET or HEAD."""
        path = urllib.parse.urlsplit(request.path).path
        if path == "/metrics":
            return request.reply(200, self.metrics.exposition(), self.metrics.content_type)
        if path == "/healthz":
            return request.reply(200, b"ok\n", "text/plain")
        if not path.startswith("/v2/"):
            return request.oci_error(404, "NOT_FOUND", "not an OCI distribution path")
        manifest, blob = _MANIFEST.match(path), _BLOB.match(path)
        found = manifest or blob
        if self._pass_through(request, missable=found is not None) or found is None:
            return None
        origin = origin_for(found.group("name"), self.config, self.registries)
        if origin is None:
            code = "MANIFEST_UNKNOWN" if manifest else "BLOB_UNKNOWN"
            return request.oci_error(404, code, "not in the CCR, and not under a configured upstream's prefix")
        if manifest:
            return self._manifest_miss(request, origin, found.group("reference"))
        if request.command == "HEAD":
            return self._blob_head_miss(request, origin, found.group("digest"))
        return self._blob_miss(request, origin, found.group("digest"))

    # -- held content ---------------------------------------------------------------------------------

    def _pass_through(self, request: FrontRequestHandler, missable: bool) -> bool:
        """Relay the CCR registry's answer; False (nothing sent) when it is a 404 the miss path may answer."""
        try:
            response = self._ask_ccr(request, missable)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("the CCR registry did not answer %s: %s", request.command, describe_transport_error(err))
            request.oci_error(503, "UNAVAILABLE", "the CCR registry is unreachable", retry_after=RETRY_AFTER_SECONDS)
            return True
        complete = False
        try:
            if response.status == 404 and missable:
                response.read(MAX_MANIFEST_BYTES)  # the small error body, so the connection can be reused
                complete = True
                return False
            answer = {name: response.headers[name] for name in _RELAYED_ANSWER if name in response.headers}
            if request.command == "HEAD" or "Content-Length" in answer:
                request.send_head(response.status, answer)
                if request.command != "HEAD" and not request.stream(response, "ccr"):
                    return True  # spliced past the parser: the connection is not reused
            else:  # an answer of unknown length (no registry sends one for content): read whole, within a cap
                body = response.read(MAX_MANIFEST_BYTES)
                request.send_head(response.status, {**answer, "Content-Length": str(len(body))})
                request.send_body(body, "ccr")
            complete = True
        except (urllib3.exceptions.HTTPError, OSError) as err:
            log.info("a pass-through ended early: %s", describe_transport_error(err))
            request.cut()
        finally:
            release(response, complete)
        return True

    def _ask_ccr(self, request: FrontRequestHandler, content: bool) -> urllib3.BaseHTTPResponse:
        """The CCR registry's answer to `request`. A 5xx for content is asked again, briefly: the filesystem driver
        answers 500 for an object another replica is committing at that moment (its writes are not atomic)."""
        headers = {name: request.headers[name] for name in _FORWARDED_REQUEST if request.headers.get(name)}
        attempt = 1
        while True:  # at most CCR_ATTEMPTS times
            response = self._ccr_pool.request(
                request.command,
                self.config.ccr.endpoint + _origin_form(request.path),
                headers=headers,
                preload_content=False,
                decode_content=False,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=5.0, read=CCR_READ_TIMEOUT_SECONDS),
            )
            if response.status < 500 or not content or attempt == CCR_ATTEMPTS:
                return response
            log.info("the CCR registry answered %s %d; asking again", request.command, response.status)
            response.read(MAX_MANIFEST_BYTES)  # the small error body, so the connection can be reused
            release(response, True)
            time.sleep(CCR_RETRY_SECONDS * 2 ** (attempt - 1))
            attempt += 1

    # -- the miss path --------------------------------------------------------------------------------

    def _manifest_miss(self, request: FrontRequestHandler, origin: Origin, reference: str) -> None:
        try:
            manifest = self.manifests.fetch(origin, reference)
        except NotFound:
            return request.oci_error(404, "MANIFEST_UNKNOWN", f"{origin.registry} has no manifest {reference}")
        except RegistryError as err:
            log.warning("manifest %s of %s: %s", reference, origin.target_repository, err)
            return request.oci_error(502, "UNAVAILABLE", f"upstream {origin.registry} did not serve the manifest")
        self.commits.start(origin, manifest, None if is_digest(reference) else reference)
        request.send_head(
            200,
            {
                "Content-Type": manifest.media_type,
                "Content-Length": str(len(manifest.data)),
                "Docker-Content-Digest": manifest.digest,
            },
        )
        if request.command == "GET":
            request.send_body(manifest.data, "flight")
        return None

    def _blob_head_miss(self, request: FrontRequestHandler, origin: Origin, digest: str) -> None:
        flight = self.flights.find(origin.target_repository, digest)
        try:
            size = flight.size if flight is not None and flight.size is not None else None
            size = size if size is not None else origin.client.blob_size(origin.repository, digest)
        except RegistryError as err:
            log.warning("HEAD blob %s of %s: %s", digest, origin.target_repository, err)
            return request.oci_error(502, "UNAVAILABLE", f"upstream {origin.registry} did not answer")
        if size is None:
            return request.oci_error(404, "BLOB_UNKNOWN", f"{origin.registry} has no blob {digest}")
        request.send_head(200, blob_headers(digest, size))
        return None

    def _blob_miss(self, request: FrontRequestHandler, origin: Origin, digest: str) -> None:
        try:
            flight = self.flights.ensure(origin, digest)
            flight.wait_started(self.flights.reader_timeout)
        except SpoolFull as err:
            log.warning("blob %s refused: %s", digest, err)
            return request.oci_error(503, "UNAVAILABLE", "the front's spool is full", retry_after=RETRY_AFTER_SECONDS)
        except FlightFailed as err:
            return request.oci_error(502, "BLOB_UNKNOWN", str(err))
        descriptor = None if flight.present else self.flights.open_spool(flight)
        if descriptor is None:  # the CCR has it now: committed while we waited, or there all along
            self._pass_through(request, missable=False)
            return None
        with os.fdopen(descriptor, "rb") as spool:
            self.follow(request, flight, spool)
        return None

    def follow(self, request: FrontRequestHandler, flight: Flight, spool: object) -> None:
        """Send the flight's bytes (the requested range) as they arrive; cut the answer if the fetch fails."""
        size = flight.size
        assert size is not None
        wanted = byte_range(request.headers.get("Range"), size)
        if wanted is None:
            return request.oci_error(416, "RANGE_INVALID", "unsatisfiable range", content_range=f"bytes */{size}")
        start, end = wanted
        headers = blob_headers(flight.digest, end - start)
        if (start, end) != (0, size):
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        request.send_head(206 if "Content-Range" in headers else 200, headers)
        self.metrics.flight_readers.inc()
        try:
            for offset, count in flight.follow(start, end, self.flights.reader_timeout):
                request.send_file(spool, offset, count)
        except FlightFailed as err:
            log.warning("a reader of blob %s is cut off: %s", flight.digest, err)
            request.cut()
        except OSError:  # the reader went away
            request.cut()
        finally:
            self.metrics.flight_readers.dec()


def _origin_form(target: str) -> str:
    """The request target as a path and query only (an absolute-form target loses its scheme and host)."""
    parts = urllib.parse.urlsplit(target)
    return "/" + parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")


def blob_headers(digest: str, length: int) -> dict[str, str]:
    """The headers of a blob answer of `length` bytes."""
    return {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(length),
        "Docker-Content-Digest": digest,
        "Accept-Ranges": "bytes",
    }


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) that a Range header asks for (the whole blob without one, or for a form we do not take)."""
    found = _RANGE.match(header or "")
    if found is None:
        return 0, size
    first, last = found.group("start"), found.group("end")
    if not first and not last:
        return 0, size
    if not first:  # the last N bytes
        return max(0, size - int(last)), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        return None
    return start, end


class FrontRequestHandler(BaseHTTPRequestHandler):
    """One connection's requests; the Front is set on the class by the server."""

    protocol_version = "HTTP/1.1"
    timeout = 120  # a client that neither sends nor reads for this long is dropped
    front: Front
    server_version = "ccr-front"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._started = time.monotonic()
        self._first_byte = False
        self.front.handle(self)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self.close_connection = True
        self.oci_error(405, "UNSUPPORTED", "the CCR front serves pulls only")

    do_PUT = do_PATCH = do_DELETE = do_POST

    def send_head(self, status: int, headers: dict[str, str]) -> None:
        """The status line and headers, with `Connection: close` when this answer ends the connection."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection and "Connection" not in headers:
            self.send_header("Connection", "close")
        self.end_headers()

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

    def send_file(self, spool: object, offset: int, count: int) -> None:
        """`count` bytes of the spool file at `offset` (sendfile where the socket allows it)."""
        self._sent(count, "flight")
        sent = self.connection.sendfile(spool, offset, count)  # type: ignore[arg-type]
        if sent != count:
            raise OSError(f"sent {sent} of {count} bytes")

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

    def oci_error(
        self, status: int, code: str, message: str, retry_after: int | None = None, content_range: str | None = None
    ) -> None:
        """An answer in the OCI distribution error format."""
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if content_range is not None:
            headers["Content-Range"] = content_range
        self.send_head(status, headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def cut(self) -> None:
        """Close the connection now, before the promised Content-Length: the client sees a broken download."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
