"""The peer endpoint: other front replicas stream a blob from the replica that owns it, while it arrives.

    GET /peer/v2/<repository>/blobs/<digest>    Authorization: Bearer <front.peerSecret>

Served on `front.peerListen` only (TLS with the peers' own CA in production; a NetworkPolicy admits only
the CCR's own Pods), never on the port nodes use. The blob comes from this replica's own flight, started
here if none runs and fetched from upstream here (or from the replica that was fetching it before this one
joined), never from a replica it would ask in turn, so peer requests cannot loop; if the flight here follows
another peer for a node's reader (the two replicas disagree on the membership) the answer is 421 and the
asker passes this replica over. With `CCR-Peer-Flying-Only` the blob is served only from a fetch already
running here (404 otherwise): a replica that just joined asks so before it fetches a digest it now owns.
A blob the CCR holds already is streamed from it.
The last byte waits for the verified end here too, and the asker checks the digest again itself.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
import urllib.parse

from webhook.front.app import Front, FrontRequestHandler, blob_headers
from webhook.front.flights import FlightFailed, SpoolFull
from webhook.front.peers import FLYING_ONLY, PEER_GONE, SWITCH_WAIT_SECONDS
from webhook.front.upstream import Origin, origin_for
from webhook.registry.errors import RegistryError

log = logging.getLogger("webhook.front")
_PEER_BLOB = re.compile(r"^/peer/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")


class PeerRequestHandler(FrontRequestHandler):
    """One peer connection's requests: authenticated by the shared secret, blobs only, counted as `peer`."""

    def do_GET(self) -> None:
        self._started = time.monotonic()
        self._first_byte = False
        peers = self.front.peers
        given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if peers is None or not hmac.compare_digest(given.encode(), peers.secret.encode()):
            self.close_connection = True
            return self.oci_error(401, "UNAUTHORIZED", "peer requests need the peers' shared secret")
        path = urllib.parse.urlsplit(self.path).path
        if path == "/healthz":  # asked when a transfer from this replica broke off: is it still up?
            return self.reply(200, b"ok\n", "text/plain")
        found = _PEER_BLOB.match(path)
        if found is None:
            return self.oci_error(404, "NOT_FOUND", "the peer endpoint serves blobs only")
        return serve_peer(self.front, self, found.group("name"), found.group("digest"))

    do_HEAD = FrontRequestHandler.do_POST

    def _sent(self, count: int, source: str) -> None:
        super()._sent(count, "peer")


def serve_peer(front: Front, request: FrontRequestHandler, repository: str, digest: str) -> None:
    """Stream blob `digest` of CCR repository `repository` to a peer from this replica's flight, or the CCR."""
    origin = origin_for(repository, front.config, front.registries)
    if origin is None:
        return request.oci_error(404, "BLOB_UNKNOWN", "not under a configured upstream's prefix")
    try:
        if request.headers.get(FLYING_ONLY):  # only a fetch already decided; an undecided one may be asking us
            flight = front.flights.find(origin.target_repository, digest)
            if flight is None or not (flight.upstream or (flight.local_only and flight.source is not None)):
                return request.oci_error(404, "BLOB_UNKNOWN", "no fetch of this blob from upstream runs here")
        else:
            flight = front.flights.ensure(origin, digest, local_only=True)
        flight.wait_started(front.flights.reader_timeout)
    except SpoolFull:
        return request.oci_error(503, "UNAVAILABLE", "the owner's spool is full")
    except FlightFailed as err:
        return request.oci_error(502, "BLOB_UNKNOWN", str(err))
    gone = request.headers.get(PEER_GONE)
    if gone:  # if we stream from that peer too, it broke off from us as well: we take over in a moment, then serve
        flight.wait_source_left(gone, SWITCH_WAIT_SECONDS)
    if flight.source is not None and not flight.local_only:
        return request.oci_error(421, "UNAVAILABLE", f"this replica streams {digest} from {flight.source} itself")
    descriptor = None if flight.present else front.flights.open_spool(flight)
    if descriptor is None:  # committed while we waited, or there all along
        return _from_ccr(front, request, origin, digest)
    with os.fdopen(descriptor, "rb") as spool:
        front.follow(request, flight, spool)
    return None


def _from_ccr(front: Front, request: FrontRequestHandler, origin: Origin, digest: str) -> None:
    """The blob as the CCR holds it, read with the front's own account (the asker verifies it again)."""
    try:
        stream = front.registries.ccr.open_blob(origin.target_repository, digest)
    except RegistryError as err:
        log.warning("blob %s for a peer: the CCR did not serve it: %s", digest, err)
        return request.oci_error(502, "UNAVAILABLE", "the CCR did not serve the blob")
    with stream:
        if stream.size is None:
            return request.oci_error(502, "UNAVAILABLE", "the CCR served the blob without a length")
        request.send_head(200, blob_headers(digest, stream.size))
        try:
            while data := stream.read():
                request.send_body(data, "peer")
        except (RegistryError, OSError) as err:
            log.info("blob %s for a peer from the CCR ended early: %s", digest, err)
            request.cut()
    return None
