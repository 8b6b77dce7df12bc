"""The node-local fallback: while the CCR is down, containerd pulls a pinned image from its upstream through here.

containerd tries the hosts of `hosts.toml` in order and moves to the next when one is refused, times out or
answers an error (remotes/docker/resolver.go and fetcher.go, containerd v1.6.20), so this endpoint, last in
the list and on loopback, only sees what the front could not serve. It is pull-only and answers digest
requests alone (`manifests/sha256:…`, `blobs/sha256:…`, GET and HEAD): `<prefix>/<repository>` is mapped back
to its configured upstream with the front's own code (`origin_for`, `UpstreamManifests`) and registry clients
(egress checks, credentials, redirects), a manifest is verified whole before it is sent, and a blob is
streamed with its last piece held back until its sha256 matched: a tampered upstream breaks the pull, it
never completes it. Tags are never resolved here, so a tag can never be served from anywhere but the CCR.
"""

from __future__ import annotations

import logging

from webhook.config import Config
from webhook.front.answers import (
    BlobUnknown,
    ManifestUnknown,
    NotAPullPath,
    PullOnly,
    RangeNotSatisfiable,
    UpstreamUnavailable,
)
from webhook.front.app import blob_headers, byte_range
from webhook.front.flights import RATE_WINDOW_SECONDS
from webhook.front.handler import FrontRequestHandler
from webhook.front.routes import Route, checked, route_of
from webhook.front.upstream import Origin, UpstreamManifests, origin_for
from webhook.http_service import BoundedServer
from webhook.node.metrics import NodeMetrics
from webhook.policy.reference import is_digest
from webhook.registry.client import Registries
from webhook.registry.errors import NotFound, RegistryError
from webhook.registry.streams import BlobStream, MinimumRate

log = logging.getLogger("webhook.node")
MAX_CONNECTIONS = 64  # every one from containerd on this node's loopback: the per-address cap is the same


class Fallback:
    """Answers one pull request from upstream, digest-verified; `serve` runs it on `nodes.fallbackListen`."""

    def __init__(self, config: Config, metrics: NodeMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.registries = Registries(config, through_front=False)  # upstreams only: the front is what failed
        self.manifests = UpstreamManifests()
        front = config.front
        self.pace = MinimumRate(
            window_bytes=int(front.min_bytes_per_second * RATE_WINDOW_SECONDS),
            window_seconds=RATE_WINDOW_SECONDS,
            deadline_seconds=front.fetch_deadline_seconds,
            setting="front.minBytesPerSecond, front.fetchDeadlineSeconds",
        )

    def serve(self, listen: str) -> BoundedServer:
        """A server bound to `listen` (not yet serving) for this fallback: the one bounded server, pulls only."""
        handler = type("Handler", (FallbackRequestHandler,), {"fallback": self})
        return BoundedServer(
            listen,
            handler,
            threads=MAX_CONNECTIONS,
            per_address=MAX_CONNECTIONS,
            head_seconds=self.config.front.head_timeout_seconds,
            max_body=0,
            name="node-fallback",
        )

    def handle(self, request: FallbackRequestHandler) -> None:
        """Answer a GET or HEAD of a digest-pinned manifest or blob; anything else is refused by the answer table."""
        route = checked(route_of(request.path))  # the front's grammar: a bad name, tag or digest is a 400
        request.route = route.name
        if route.name not in ("manifest", "blob") or not is_digest(route.reference):
            self.metrics.fallback_requests.labels("other", "refused").inc()
            raise NotAPullPath("the node fallback serves digest-pinned pulls only")
        kind = "manifests" if route.name == "manifest" else "blobs"
        outcome = "refused"
        try:
            outcome = self._answer(request, route)
        except NotFound:
            outcome = "not-found"
            unknown = ManifestUnknown if route.name == "manifest" else BlobUnknown
            raise unknown(f"{route.reference} not upstream") from None
        except RegistryError as err:
            log.warning("fallback %s %s of %s: %s", kind, route.reference, route.repository, err)
            outcome = "upstream-error"
            raise UpstreamUnavailable(f"the upstream did not serve {route.reference}") from None
        finally:
            self.metrics.fallback_requests.labels(kind, outcome).inc()

    def _answer(self, request: FallbackRequestHandler, route: Route) -> str:
        origin = origin_for(route.repository, self.config, self.registries)
        if origin is None:
            unknown = ManifestUnknown if route.name == "manifest" else BlobUnknown
            raise unknown("not under a configured upstream's prefix")
        if route.name == "manifest":
            return self._manifest(request, origin, route.reference)
        if request.command == "HEAD":
            return self._blob_head(request, origin, route.reference)
        return self._blob(request, origin, route.reference)

    def _manifest(self, request: FallbackRequestHandler, origin: Origin, digest: str) -> str:
        manifest = self.manifests.fetch(origin, digest)  # checked against the digest before anything is sent
        headers = {
            "Content-Type": manifest.media_type,
            "Content-Length": str(len(manifest.data)),
            "Docker-Content-Digest": manifest.digest,
        }
        request.send_head(200, headers)
        if request.command == "GET":
            request.wfile.write(manifest.data)
            self.metrics.fallback_bytes.inc(len(manifest.data))
        return "served"

    def _blob_head(self, request: FallbackRequestHandler, origin: Origin, digest: str) -> str:
        size = origin.client.blob_size(origin.repository, digest)
        if size is None:
            raise NotFound("blob", digest)
        request.send_head(200, blob_headers(digest, size))
        return "served"

    def _blob(self, request: FallbackRequestHandler, origin: Origin, digest: str) -> str:
        stream = origin.client.open_blob(origin.repository, digest)
        with stream:
            if stream.size is None:
                raise UpstreamUnavailable(f"upstream {origin.registry} sent a blob without a length")
            wanted = byte_range(request.headers.get("Range"), stream.size)
            if wanted is None:
                raise RangeNotSatisfiable(stream.size)
            stream.hold_to(self.pace)
            start, end = wanted
            headers = blob_headers(digest, end - start)
            if (start, end) != (0, stream.size):
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{stream.size}"
            request.send_head(206 if "Content-Range" in headers else 200, headers)
            try:
                self._relay_verified(request, stream, start, end)
            except RegistryError as err:
                log.warning("fallback blob %s of %s cut off: %s", digest, origin.target_repository, err)
                request.cut()
                return "cut"
            except OSError:  # the node went away
                request.cut()
                return "cut"
        return "served"

    def _relay_verified(self, request: FallbackRequestHandler, stream: BlobStream, start: int, end: int) -> None:
        """Send bytes [start, end) of the blob, holding the last piece back until the whole blob verified."""
        offset = 0  # where `held` starts in the blob
        held = b""
        while data := stream.read():  # raises on a broken transfer, a trickle, or (at the end) a wrong digest
            self._send_window(request, held, offset, start, end)
            offset += len(held)
            held = data
        self._send_window(request, held, offset, start, end)  # read() returned b"": verified

    def _send_window(self, request: FallbackRequestHandler, data: bytes, offset: int, start: int, end: int) -> None:
        low, high = max(start, offset), min(end, offset + len(data))
        if low < high:
            request.wfile.write(data[low - offset : high - offset])
            self.metrics.fallback_bytes.inc(high - low)


class FallbackRequestHandler(FrontRequestHandler):
    """One node connection to the fallback: the front's connection handling (the answer table, cutting an answer
    short), routed to the Fallback set on the class by Fallback.serve, counted in the node's own metrics."""

    server_version = "ccr-node-fallback"
    fallback: Fallback

    def do_GET(self) -> None:
        self._answer(lambda: self.fallback.handle(self))

    do_HEAD = do_GET

    def count(self, status: int) -> None:
        """Not the front's request counter: the node counts its answers by outcome (`ccr_node_fallback_*`)."""

    def _refuse_write(self) -> None:
        raise PullOnly("the node fallback serves pulls only")
