"""The front's peers: who the other replicas are, and fetching a blob from its owner while it arrives there.

Membership is a static list (`front.peers`) or the ready addresses of a headless Service's EndpointSlices
(`front.peerService`), re-read every PEER_REFRESH_SECONDS; this replica is always a member. A blob is
fetched from upstream only by its owner (owners.rank); every other replica opens the owner's peer
endpoint, which serves the owner's flight as it grows, and spools and verifies what it receives like any
fetch (so its readers get the last byte only after its own sha256 check). An owner that cannot be
reached, refuses, or is not fetching the blob itself is passed over for the next in rank: if that is
this replica, it fetches from upstream itself, unless the peer ranked after it is fetching the blob
already (it owned the digest before this replica joined), which it then follows: a replica that joins
takes over new digests only. A peer lost mid-transfer fails the flight and cuts its readers; the next
request starts over with the membership of that moment.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
from pathlib import Path
from typing import Any

import urllib3

from webhook.config import FrontConfig
from webhook.errors import CCRWebhookError
from webhook.front.flights import Flight, open_upstream
from webhook.front.owners import rank
from webhook.kube.client import kubernetes_client
from webhook.registry.errors import describe_transport_error
from webhook.registry.streams import BlobStream, release

log = logging.getLogger("webhook.front")
PEER_REFRESH_SECONDS = 10.0
PEER_CONNECT_SECONDS = 2.0
PEER_READ_SECONDS = 60.0  # the owner may wait for a fetch slot or a slow upstream before its first byte
MAX_PEERS = 256
PEER_PATH = "/peer/v2/{repository}/blobs/{digest}"
FLYING_ONLY = "CCR-Peer-Flying-Only"  # serve the blob only from a fetch from upstream already running, else 404


def own_address(settings: FrontConfig) -> str:
    """This replica as its peers name it: `peerAddress`, with the port of `peerListen` when it has none."""
    address = settings.peer_address or ""
    if re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):[0-9]{1,5}", address):
        return address
    host = address if address.startswith("[") or ":" not in address else f"[{address}]"  # a bare IPv6 Pod IP
    return f"{host}:{settings.peer_listen.rsplit(':', 1)[1]}"


def read_secret(path: str) -> str:
    """The shared peer secret from its file; a ValueError if it is empty."""
    secret = Path(path).read_text().strip()
    if not secret:
        raise ValueError(f"the peer secret file {path} is empty")
    return secret


class Membership:
    """The current set of peer addresses (`host:port`), this replica's own among them."""

    def __init__(self, settings: FrontConfig, api_client: Any = None) -> None:
        self.me = own_address(settings)
        self._settings, self._api = settings, api_client
        self._members = frozenset({self.me, *settings.peers})
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def members(self) -> frozenset[str]:
        """The peers as last known."""
        with self._lock:
            return self._members

    def refresh(self) -> None:
        """Re-read the headless Service's EndpointSlices; on an error the last membership stays."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        settings = self._settings
        try:
            slices = client.DiscoveryV1Api(self._api).list_namespaced_endpoint_slice(
                settings.peer_namespace,
                label_selector=f"kubernetes.io/service-name={settings.peer_service}",
                _request_timeout=10,
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("peers of %s not refreshed: %s", settings.peer_service, describe_transport_error(err))
            return
        found = {self.me}
        default_port = int(settings.peer_listen.rsplit(":", 1)[1])
        for endpoint_slice in slices.items:
            ports = [port.port for port in endpoint_slice.ports or () if port.name in ("peer", None) and port.port]
            port = ports[0] if ports else default_port
            for endpoint in endpoint_slice.endpoints or ():
                if endpoint.conditions is not None and endpoint.conditions.ready is False:
                    continue
                for address in (endpoint.addresses or ())[:1]:
                    found.add(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
        if len(found) > MAX_PEERS:
            log.warning("%d peers listed; using the first %d", len(found), MAX_PEERS)
            found = {self.me, *sorted(found)[: MAX_PEERS - 1]}
        with self._lock:
            changed = found != self._members
            self._members = frozenset(found)
        if changed:
            log.info("peers now: %s", ", ".join(sorted(found)))

    def start(self) -> None:
        """Keep the membership current from the Service (a static list needs nothing)."""
        if self._settings.peer_service is None:
            return
        if self._api is None:
            self._api = kubernetes_client(None)  # in the cluster: the Pod's service account
        self.refresh()
        threading.Thread(target=self._watch, name="peers", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(PEER_REFRESH_SECONDS):
            self.refresh()


class PeerUnavailable(CCRWebhookError):
    """The peer could not serve the blob (unreachable, refused, not fetching it itself)."""


class Peers:
    """Opens each flight's blob stream from the digest's owner, or from upstream when this replica owns it."""

    def __init__(self, settings: FrontConfig, membership: Membership, max_connections: int) -> None:
        self.membership = membership
        self.secret = read_secret(settings.peer_secret or "")
        self._scheme = "https" if settings.peer_tls_cert else "http"
        context = None
        if settings.peer_ca_file:
            context = ssl.create_default_context(cafile=settings.peer_ca_file)
            context.check_hostname = False  # Pod IPs change; the CA issues peer certificates only
        self._pool = urllib3.PoolManager(maxsize=max_connections, block=False, ssl_context=context)

    def open_blob(self, flight: Flight) -> BlobStream:
        """The blob's stream from the first peer in rank that serves it; from upstream once this replica is next.

        Before fetching from upstream, the peer ranked after this one is asked whether it is fetching the blob
        already (it owned the digest until this replica joined): if so, this replica follows it instead."""
        me = self.membership.me
        ranked = rank(flight.digest, self.membership.members())
        mine = ranked.index(me)
        candidates = [(peer, False) for peer in ([] if flight.local_only else ranked[:mine])]
        for peer, flying_only in [*candidates, *((peer, True) for peer in ranked[mine + 1 : mine + 2])]:
            try:
                stream = self._open(peer, flight, flying_only)
            except PeerUnavailable as err:
                if not flying_only:
                    log.warning("blob %s: owner %s passed over: %s", flight.digest, peer, err)
                continue
            flight.source = peer
            return stream
        flight.source, flight.upstream = None, True
        return open_upstream(flight)

    def _open(self, peer: str, flight: Flight, flying_only: bool) -> BlobStream:
        repository = flight.origin.target_repository
        url = f"{self._scheme}://{peer}" + PEER_PATH.format(repository=repository, digest=flight.digest)
        try:
            response = self._pool.request(
                "GET",
                url,
                headers={"Authorization": f"Bearer {self.secret}", **({FLYING_ONLY: "1"} if flying_only else {})},
                preload_content=False,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=PEER_CONNECT_SECONDS, read=PEER_READ_SECONDS),
            )
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise PeerUnavailable(describe_transport_error(err)) from None
        if response.status != 200:
            release(response, complete=False)
            raise PeerUnavailable(f"answered {response.status}")
        return BlobStream(response, flight.digest, endpoint=f"peer {peer}", repository=repository)
