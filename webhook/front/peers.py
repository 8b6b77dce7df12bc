"""The front's peers: who the other replicas are, and fetching a blob from its owner while it arrives there.

Membership is a static list (`front.peers`) or the ready addresses of a headless Service's EndpointSlices
(`front.peerService`), re-read every PEER_REFRESH_SECONDS; this replica is always a member. A blob is
fetched from upstream only by its owner (owners.rank); every other replica opens the owner's peer
endpoint, which serves the owner's flight as it grows, and spools and verifies what it receives like any
fetch (so its readers get the last byte only after its own sha256 check). An owner that cannot be
reached, refuses, or is not fetching the blob itself is passed over for the next in rank: if that is
this replica, it fetches from upstream itself, unless the peer ranked after it is fetching the blob
already (it owned the digest before this replica joined), which it then follows: a replica that joins
takes over new digests only. An owner lost mid-transfer is replaced by the next in rank at the same
offset (PeerStream), so readers carry on; an owner whose own fetch failed fails its followers too.
The whole protocol (owner, Flying-Only, CCR-Peer-Gone, 421, takeover, commit by the owner, the followers'
wait) is docs/decisions/0005-front-peer-protocol.md.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import urllib3
from urllib3.response import BaseHTTPResponse

from webhook.config import FrontConfig
from webhook.errors import CCRWebhookError
from webhook.front.flights import CHUNK_BYTES, Flight, open_upstream
from webhook.front.metrics import FrontMetrics
from webhook.front.owners import rank
from webhook.kube.client import kubernetes_client
from webhook.registry.client import RegistryClient
from webhook.registry.errors import RegistryProtocolError, RegistryUnavailable, describe_transport_error
from webhook.registry.streams import BlobStream, MinimumRate, RateWatch, release

log = logging.getLogger("webhook.front")
PEER_REFRESH_SECONDS = 10.0
PEER_CONNECT_SECONDS = 2.0
PEER_READ_SECONDS = 60.0
OWNER_COMMIT_POLLS = 60  # a follower waits this many times OWNER_COMMIT_POLL_SECONDS for the owner's commit
OWNER_COMMIT_POLL_SECONDS = 0.5  # the owner may wait for a fetch slot or a slow upstream before its first byte
MAX_PEERS = 256
PEER_PATH = "/peer/v2/{repository}/blobs/{digest}"
PEER_GONE = "CCR-Peer-Gone"  # the peer the asker streamed this blob from until it broke off
SWITCH_WAIT_SECONDS = 2 * PEER_CONNECT_SECONDS + 1  # how long an asked peer waits to take over from a gone one
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


def committed_by_owner(ccr: RegistryClient, flight: Flight) -> bool:
    """Whether the CCR holds the blob, committed by its owner (which verified it before this replica did) within a
    bounded wait; False if it still lacks it then (the owner went away), and this replica commits it itself."""
    for attempt in range(OWNER_COMMIT_POLLS):
        if ccr.blob_size(flight.origin.target_repository, flight.digest) is not None:
            return True
        if attempt + 1 < OWNER_COMMIT_POLLS:
            time.sleep(OWNER_COMMIT_POLL_SECONDS)
    return False


class PeerUnavailable(CCRWebhookError):
    """The peer could not serve the blob (unreachable, refused, not fetching it itself)."""


class Peers:
    """Opens each flight's blob stream from the digest's owner, or from upstream when this replica owns it."""

    def __init__(
        self, settings: FrontConfig, membership: Membership, max_connections: int, metrics: FrontMetrics
    ) -> None:
        self.membership, self.metrics = membership, metrics
        self.secret = read_secret(settings.peer_secret or "")
        self._scheme = "https" if settings.peer_tls_cert else "http"
        context = None
        if settings.peer_ca_file:
            context = ssl.create_default_context(cafile=settings.peer_ca_file)
            context.check_hostname = False  # Pod IPs change; the CA issues peer certificates only
        self._pool = urllib3.PoolManager(maxsize=max_connections, block=False, ssl_context=context)

    def open_blob(self, flight: Flight) -> BlobStream | PeerStream:
        """The blob's stream from the first peer in rank that serves it; from upstream once this replica is next.

        Before fetching from upstream, the peer ranked after this one is asked whether it is fetching the blob
        already (it owned the digest until this replica joined): if so, this replica follows it instead."""
        me = self.membership.me
        ranked = rank(flight.digest, self.membership.members())
        mine = ranked.index(me)
        candidates = [(peer, False) for peer in ([] if flight.local_only else ranked[:mine])]
        for peer, flying_only in [*candidates, *((peer, True) for peer in ranked[mine + 1 : mine + 2])]:
            try:
                response = self.request(peer, flight, flying_only=flying_only)
            except PeerUnavailable as err:
                if not flying_only:
                    log.warning("blob %s: owner %s passed over: %s", flight.digest, peer, err)
                continue
            flight.stream_from(peer)
            return PeerStream(self, flight, peer, response)
        flight.stream_from(None)
        return open_upstream(flight)

    def alive(self, peer: str) -> bool:
        """Whether the peer still answers (a replica that is gone, or going, does not)."""
        try:
            response = self._pool.request(
                "GET",
                f"{self._scheme}://{peer}/healthz",
                headers={"Authorization": f"Bearer {self.secret}"},
                retries=False,
                timeout=urllib3.Timeout(connect=PEER_CONNECT_SECONDS, read=PEER_CONNECT_SECONDS),
            )
        except (urllib3.exceptions.HTTPError, OSError):
            return False
        return response.status == 200

    def request(
        self, peer: str, flight: Flight, flying_only: bool = False, offset: int = 0, gone: str | None = None
    ) -> BaseHTTPResponse:
        """The peer's answer (200, or 206 from `offset`) for the flight's blob; PeerUnavailable for any other.

        `gone` names the peer this replica was streaming the blob from until it broke off: the asked peer,
        if it streams from there too, is about to take over, and answers once it has."""
        repository = flight.origin.target_repository
        url = f"{self._scheme}://{peer}" + PEER_PATH.format(repository=repository, digest=flight.digest)
        headers = {"Authorization": f"Bearer {self.secret}"}
        if flying_only:
            headers[FLYING_ONLY] = "1"
        if offset:
            headers["Range"] = f"bytes={offset}-"
        if gone:
            headers[PEER_GONE] = gone
        try:
            response = self._pool.request(
                "GET",
                url,
                headers=headers,
                preload_content=False,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=PEER_CONNECT_SECONDS, read=PEER_READ_SECONDS),
            )
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise PeerUnavailable(describe_transport_error(err)) from None
        if response.status not in ((200, 206) if offset else (200,)):
            release(response, complete=False)
            raise PeerUnavailable(f"answered {response.status}")
        return response


class PeerStream:
    """A blob streamed from its owner and verified here; continued from the next in rank if the owner goes away.

    A break while the owner still accepts connections means its fetch failed (upstream cut off, wrong
    bytes, too slow): the stream fails too, as the owner's own readers do. A break from an owner that is
    gone is picked up at the same offset from the next peer in rank, or from upstream when that is this
    replica; the sha256 over every byte passed on is checked at the end either way."""

    def __init__(self, peers: Peers, flight: Flight, peer: str, response: BaseHTTPResponse) -> None:
        self._peers, self._flight = peers, flight
        self._peer = peer
        self._source: BaseHTTPResponse | BlobStream = response
        length = response.headers.get("Content-Length", "")
        self.size: int | None = int(length) if length.isdigit() else None
        self._hash = hashlib.new(flight.digest.split(":", 1)[0])  # sha256 or sha512, as the route checked
        self._received = 0
        self._skip = 0  # bytes the current source repeats from the start, dropped
        self._gone = {peer}
        self._done = False
        self._pace: RateWatch | None = None

    def hold_to(self, rule: MinimumRate) -> None:
        """Hold the rest of this transfer, whichever peer it comes from, to `rule` (TransferTooSlow once broken)."""
        self._pace = rule.watch(f"blob {self._flight.digest}")

    def read(self, amount: int = CHUNK_BYTES) -> bytes:
        """Up to `amount` bytes; b'' at the end, once the digest has been checked."""
        for _ in range(MAX_PEERS + 2):  # a switch per peer at most, then upstream
            if self._done:
                return b""
            try:
                data = self._read_source(amount)
            except (urllib3.exceptions.HTTPError, OSError) as err:
                self._switch(describe_transport_error(err))
                continue
            if data:
                return data
            self._done = True
            actual = f"{self._hash.name}:{self._hash.hexdigest()}"
            if self._received != self.size or actual != self._flight.digest:
                raise RegistryProtocolError(
                    f"blob {self._flight.digest}: {self._received} bytes with digest {actual} from peer {self._peer}"
                )
            return b""
        raise RegistryUnavailable(f"blob {self._flight.digest}: no peer could finish it")

    def _read_source(self, amount: int) -> bytes:
        """The next new bytes of the current source, hashed (what it repeats from the start is dropped)."""
        while True:
            if isinstance(self._source, BlobStream):
                data = self._source.read(amount)  # RegistryError from upstream fails the flight
            else:
                data = self._source.read(amount, decode_content=False)
            if self._skip and data:
                dropped = min(self._skip, len(data))
                self._skip -= dropped
                data = data[dropped:]
                if not data:
                    continue
            if self._pace is not None:
                self._pace.received(len(data))
            self._hash.update(data)
            self._received += len(data)
            return data

    def _switch(self, why: str) -> None:
        """Carry on from the next peer in rank (or upstream) at the current offset, unless the owner is still up."""
        self.close()
        flight, broken = self._flight, self._peer
        where = f"blob {flight.digest}: peer {broken} broke off after {self._received} bytes"
        if self._flight.source is None or self._peers.alive(self._peer):
            raise RegistryUnavailable(f"{where}: {why}")
        log.warning("%s and is gone; carrying on from the next in rank", where)
        self._done = False
        me = self._peers.membership.me
        for peer in rank(flight.digest, self._peers.membership.members() | {self._peer}):
            if peer in self._gone:
                continue
            if peer == me:
                flight.stream_from(None)
                self._peers.metrics.owned_fetches.inc()
                self._source, self._skip = open_upstream(flight), self._received
                return
            try:
                response = self._peers.request(peer, flight, offset=self._received, gone=broken)
            except PeerUnavailable as err:
                log.warning("blob %s: peer %s passed over: %s", flight.digest, peer, err)
                self._gone.add(peer)
                continue
            self._peer = peer
            flight.stream_from(peer)
            self._source, self._skip = response, (self._received if response.status == 200 else 0)
            return

    def close(self) -> None:
        """Stop reading; a connection with unread data is closed rather than reused."""
        if isinstance(self._source, BlobStream):
            self._source.close()
        else:
            release(self._source, complete=False)

    def __enter__(self) -> PeerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
