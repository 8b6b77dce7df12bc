"""Which front replica owns a blob: rendezvous (highest random weight) hashing of the digest over the peers.

Pure and coordinator-free: every replica that sees the same membership ranks the peers the same way for a
digest, and the first is the owner, the one replica that fetches the blob from upstream. Removing a peer
moves only the digests it owned (each to its runner-up); adding one takes only the digests it now ranks
first for, about 1/n of them, and leaves every other digest where it was. The weight is part of the peer
protocol (docs/decisions/0005-front-peer-protocol.md states it exactly, and a test holds the two together).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _weight(peer: str, digest: str) -> bytes:
    return hashlib.sha256(f"{peer}\n{digest}".encode()).digest()


def rank(digest: str, peers: Iterable[str]) -> list[str]:
    """The peers in the order they should serve `digest`: the owner first, then who takes over if it goes."""
    return sorted(set(peers), key=lambda peer: _weight(peer, digest), reverse=True)
