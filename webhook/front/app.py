"""The front's request handling: the OCI distribution pull API (GET and HEAD), `/metrics` and `/healthz`.

Every request is checked against the distribution grammar first (`routes`); what it refuses is answered
4xx and goes nowhere. Every manifest and blob request goes to the CCR registry first, with the node's own
Authorization, so the CCR's access control stays as it is; its answer is passed through and streamed in
large pieces. Only a 404 for a repository under a configured upstream's prefix takes the miss path: the
manifest from upstream (verified, one fetch however many ask), a blob from its flight (spooled, followed as
it grows, cut short if the fetch fails) through `serve_flight`, the one path the peer endpoint uses too.
A referrers list the CCR cannot give (it has no referrers API) is asked of that upstream (`referrers`).
Anything else, and every write method (the front is pull-only), never reaches an upstream. Failures are
raised as errors and answered by the handler through one table (`answers`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

import urllib3

from webhook.config import Config
from webhook.front.answers import (
    BlobUnknown,
    CCRUnreachable,
    ManifestUnknown,
    RangeNotSatisfiable,
    ReferrersUnsupported,
    UpstreamUnavailable,
)
from webhook.front.budget import FetchBudget
from webhook.front.commit import ImageCommits, commit_blob
from webhook.front.flights import Flight, FlightFailed, Flights, Spool
from webhook.front.held import HeldBlobs
from webhook.front.metrics import FrontMetrics
from webhook.front.peers import Membership, Peers
from webhook.front.referrers import upstream_referrers
from webhook.front.routes import Route, artifact_type, checked, route_of
from webhook.front.upstream import Origin, UpstreamManifests, origin_for
from webhook.policy.reference import is_digest
from webhook.registry.client import MAX_MANIFEST_BYTES, Registries
from webhook.registry.errors import NotFound, RegistryError, describe_transport_error
from webhook.registry.streams import release

if TYPE_CHECKING:
    from webhook.front.handler import FrontRequestHandler

log = logging.getLogger("webhook.front")
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
    "OCI-Filters-Applied",
)
CCR_READ_TIMEOUT_SECONDS = 60.0
CCR_ATTEMPTS = 4  # a content request the CCR answers with a 5xx is asked again, 0.1 + 0.2 + 0.4 s apart at most
CCR_RETRY_SECONDS = 0.1


class Front:
    """The front's state: clients, spool, flights, commits, metrics; `handle` answers one request."""

    def __init__(self, config: Config, max_connections: int) -> None:
        self.config = config
        self.registries = Registries(config, through_front=False)  # the front is what others read through
        settings = config.front
        self.metrics = FrontMetrics({"serving": settings.tls_cert, "peer": settings.peer_tls_cert})
        spool = Spool(settings.spool_dir, settings.spool_max_bytes)
        self.metrics.watch_spool(lambda: spool.reserved, spool.max_bytes)
        ccr = self.registries.ccr
        self.manifests = UpstreamManifests()
        self.budget = FetchBudget.of(config, ccr)
        self.peers = Peers(settings, Membership(settings), max_connections, self.metrics) if settings.peering else None
        self.flights = Flights(
            ccr,
            spool,
            self.metrics,
            max_concurrent_fetches=settings.max_concurrent_fetches,
            fetch_deadline_seconds=settings.fetch_deadline_seconds,
            min_bytes_per_second=settings.min_bytes_per_second,
            commit_blob=self._commit_blob,
            open_blob=self.peers.open_blob if self.peers is not None else None,
            admit=self.budget.admit if self.budget is not None else None,
        )
        if self.peers is not None:
            self.peers.membership.start()
        self.commits = ImageCommits(ccr, self.flights, self.manifests)
        self.held = HeldBlobs(settings.registry_storage_dir, _RELAYED_ANSWER) if settings.registry_storage_dir else None
        self._ccr_pool = urllib3.PoolManager(
            maxsize=max_connections, block=False, ca_certs=config.ccr.ca_file or None, headers={}
        )

    def handle(self, request: FrontRequestHandler) -> None:
        """Answer one GET or HEAD of the node-facing port; a Refused (or failed flight) the handler answers."""
        route = route_of(request.path)
        request.route = route.name
        route = checked(route)
        if route.name == "metrics":
            return request.reply(200, self.metrics.exposition(), self.metrics.content_type)
        if route.name == "healthz":
            return request.reply(200, b"ok\n", "text/plain")
        if (
            route.name == "blob"
            and request.command == "GET"
            and self.held is not None
            and self.held.serve(
                request, route.repository, route.reference, lambda: self._ask_ccr(request, route, True, "HEAD")
            )
        ):
            return None  # a held blob, sent from the registry's files (front/held.py)
        missable = route.name in ("manifest", "blob", "referrers")
        if self._pass_through(request, route, missable) or not missable:
            return None
        origin = self.origin(route)
        if route.name == "manifest":
            return self._manifest_miss(request, origin, route.reference)
        if route.name == "referrers":
            return self._referrers_miss(request, origin, route)
        if request.command == "HEAD":
            return self._blob_head_miss(request, origin, route.reference)
        flight = self.flights.ensure(origin, route.reference)
        return self.serve_flight(request, flight, held=lambda: self._pass_through(request, route, missable=False))

    def _commit_blob(self, flight: Flight) -> None:
        """Upload a verified blob into the CCR, and count it against the storage budget."""
        commit_blob(self.registries.ccr, flight)
        if self.budget is not None and flight.size is not None:
            self.budget.committed(flight.size)

    def origin(self, route: Route) -> Origin:
        """The upstream `route`'s repository mirrors; ManifestUnknown, BlobUnknown or ReferrersUnsupported when it
        is under no prefix."""
        origin = origin_for(route.repository, self.config, self.registries)
        if origin is None:
            unknown = {"manifest": ManifestUnknown, "referrers": ReferrersUnsupported}.get(route.name, BlobUnknown)
            raise unknown("not in the CCR, and not under a configured upstream's prefix")
        return origin

    # -- held content ---------------------------------------------------------------------------------

    def _pass_through(self, request: FrontRequestHandler, route: Route, missable: bool) -> bool:
        """Relay the CCR registry's answer; False (nothing sent) when it is a 404 the miss path may answer."""
        try:
            response = self._ask_ccr(request, route, missable)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("the CCR registry did not answer %s: %s", request.command, describe_transport_error(err))
            raise CCRUnreachable("the CCR registry is unreachable") from None
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

    def _ask_ccr(
        self, request: FrontRequestHandler, route: Route, content: bool, method: str | None = None
    ) -> urllib3.BaseHTTPResponse:
        """The CCR registry's answer to `request` (for `route`'s checked target, asked as `method`, by default the
        request's own). A 5xx for content is asked again, briefly: the filesystem driver answers 500 for an object
        another replica is committing at that moment (its writes are not atomic)."""
        headers = {name: request.headers[name] for name in _FORWARDED_REQUEST if request.headers.get(name)}
        attempt = 1
        while True:  # at most CCR_ATTEMPTS times
            response = self._ccr_pool.request(
                method or request.command,
                self.config.ccr.endpoint + route.target,
                headers=headers,
                preload_content=False,
                decode_content=False,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=5.0, read=CCR_READ_TIMEOUT_SECONDS),
            )
            if response.status < 500 or not content or attempt == CCR_ATTEMPTS:
                return response
            log.info("the CCR registry answered %s %d; asking again", method or request.command, response.status)
            response.read(MAX_MANIFEST_BYTES)  # the small error body, so the connection can be reused
            release(response, True)
            time.sleep(CCR_RETRY_SECONDS * 2 ** (attempt - 1))
            attempt += 1

    # -- the miss path --------------------------------------------------------------------------------

    def _manifest_miss(self, request: FrontRequestHandler, origin: Origin, reference: str) -> None:
        try:
            manifest = self.manifests.fetch(origin, reference)
        except NotFound:
            raise ManifestUnknown(f"{origin.registry} has no manifest {reference}") from None
        except RegistryError as err:
            log.warning("manifest %s of %s: %s", reference, origin.target_repository, err)
            raise UpstreamUnavailable(f"upstream {origin.registry} did not serve the manifest") from None
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

    def _referrers_miss(self, request: FrontRequestHandler, origin: Origin, route: Route) -> None:
        """The referrers list from upstream, for a CCR without the referrers API; 404 if upstream has none either."""
        listed = upstream_referrers(origin, route.reference, artifact_type(route))
        if listed is None:
            raise ReferrersUnsupported(f"neither the CCR nor {origin.registry} has the referrers API")
        body, headers = listed
        request.send_head(200, {**headers, "Content-Length": str(len(body))})
        if request.command == "GET":
            request.send_body(body, "flight")

    def _blob_head_miss(self, request: FrontRequestHandler, origin: Origin, digest: str) -> None:
        flight = self.flights.find(origin.target_repository, digest)
        try:
            size = flight.size if flight is not None and flight.size is not None else None
            size = size if size is not None else origin.client.blob_size(origin.repository, digest)
        except RegistryError as err:
            log.warning("HEAD blob %s of %s: %s", digest, origin.target_repository, err)
            raise UpstreamUnavailable(f"upstream {origin.registry} did not answer") from None
        if size is None:
            raise BlobUnknown(f"{origin.registry} has no blob {digest}")
        request.send_head(200, blob_headers(digest, size))

    def serve_flight(
        self,
        request: FrontRequestHandler,
        flight: Flight,
        held: Callable[[], object],
        settle: Callable[[Flight], None] | None = None,
    ) -> None:
        """Answer `request` from `flight`, for the node-facing and the peer endpoint alike.

        Waits for the fetch to start (FlightFailed if it does not), lets `settle` judge the flight (the peer
        endpoint's takeover wait and 421), then follows the spool; a blob the CCR holds by then, committed
        while waiting or there all along, is answered by `held` instead."""
        flight.wait_started(self.flights.reader_timeout)
        if settle is not None:
            settle(flight)
        descriptor = None if flight.present else self.flights.open_spool(flight)
        if descriptor is None:
            held()
            return
        with os.fdopen(descriptor, "rb") as spool:
            self.follow(request, flight, spool)

    def follow(self, request: FrontRequestHandler, flight: Flight, spool: BinaryIO) -> None:
        """Send the flight's bytes (the requested range) as they arrive; cut the answer if the fetch fails."""
        size = flight.size
        assert size is not None
        wanted = byte_range(request.headers.get("Range"), size)
        if wanted is None:
            raise RangeNotSatisfiable(size)
        start, end = wanted
        headers = blob_headers(flight.digest, end - start)
        if (start, end) != (0, size):
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        request.send_head(206 if "Content-Range" in headers else 200, headers)
        self.metrics.flight_readers.inc()
        try:
            for offset, count in flight.follow(start, end, self.flights.reader_timeout):
                request.send_file(spool, offset, count, "flight")
        except FlightFailed as err:
            log.warning("a reader of blob %s is cut off: %s", flight.digest, err)
            request.cut()
        except OSError:  # the reader went away
            request.cut()
        finally:
            self.metrics.flight_readers.dec()


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
