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
The last byte waits for the verified end here too, and the asker checks the digest again itself. The
answer comes through the same `Front.serve_flight` a node's request takes, and failures through the same
table. The protocol as a whole: docs/decisions/0005-front-peer-protocol.md.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from webhook.front.answers import BlobUnknown, Misdirected, NotAPullPath, PeerUnauthorized, UpstreamUnavailable
from webhook.front.app import Front, blob_headers
from webhook.front.flights import Flight
from webhook.front.peers import FLYING_ONLY, PEER_GONE, SWITCH_WAIT_SECONDS
from webhook.front.routes import checked, route_of
from webhook.front.upstream import Origin
from webhook.registry.errors import RegistryError

if TYPE_CHECKING:
    from webhook.front.handler import FrontRequestHandler

log = logging.getLogger("webhook.front")


def handle_peer(front: Front, request: FrontRequestHandler) -> None:
    """Answer one GET of the peer port: the shared secret first, then `/healthz` or a blob."""
    route = route_of(request.path, peer=True)
    request.route = route.name
    peers = front.peers
    given = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
    if peers is None or not hmac.compare_digest(given.encode(), peers.secret.encode()):
        request.close_connection = True
        raise PeerUnauthorized("peer requests need the peers' shared secret")
    if route.name == "healthz":  # asked when a transfer from this replica broke off: is it still up?
        return request.reply(200, b"ok\n", "text/plain")
    if route.name != "peer_blob":
        raise NotAPullPath("the peer endpoint serves blobs only")
    route = checked(route)
    return serve_peer(front, request, front.origin(route), route.reference)


def serve_peer(front: Front, request: FrontRequestHandler, origin: Origin, digest: str) -> None:
    """Stream blob `digest` of `origin`'s CCR repository to a peer from this replica's flight, or the CCR."""
    if request.headers.get(FLYING_ONLY):  # only a fetch already decided; an undecided one may be asking us
        flight = front.flights.find(origin.target_repository, digest)
        if flight is None or not (flight.upstream or (flight.local_only and flight.source is not None)):
            raise BlobUnknown("no fetch of this blob from upstream runs here")
    else:
        flight = front.flights.ensure(origin, digest, local_only=True)

    def settle(flight: Flight) -> None:
        gone = request.headers.get(PEER_GONE)
        if gone:  # if we stream from that peer too, it broke off from us as well: we take over in a moment
            flight.wait_source_left(gone, SWITCH_WAIT_SECONDS)
        if flight.source is not None and not flight.local_only:
            raise Misdirected(f"this replica streams {digest} from {flight.source} itself")

    front.serve_flight(request, flight, held=lambda: _from_ccr(front, request, origin, digest), settle=settle)


def _from_ccr(front: Front, request: FrontRequestHandler, origin: Origin, digest: str) -> None:
    """The blob as the CCR holds it, read with the front's own account (the asker verifies it again)."""
    try:
        stream = front.registries.ccr.open_blob(origin.target_repository, digest)
    except RegistryError as err:
        log.warning("blob %s for a peer: the CCR did not serve it: %s", digest, err)
        raise UpstreamUnavailable("the CCR did not serve the blob") from None
    with stream:
        if stream.size is None:
            raise UpstreamUnavailable("the CCR served the blob without a length")
        request.send_head(200, blob_headers(digest, stream.size))
        try:
            while data := stream.read():
                request.send_body(data, "peer")
        except (RegistryError, OSError) as err:
            log.info("blob %s for a peer from the CCR ended early: %s", digest, err)
            request.cut()
