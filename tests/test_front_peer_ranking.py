"""Whom a replica asks for a blob, in-process (ADR 0005): the members ranked before it in order, then the one ranked
right after it with Flying-Only, then upstream itself; a local-only flight (started for a peer) never asks those
ranked before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from webhook.config import parse_config
from webhook.front import peers as peers_module
from webhook.front.flights import Flight
from webhook.front.metrics import FrontMetrics
from webhook.front.owners import rank
from webhook.front.peers import Membership, Peers, PeerStream, PeerUnavailable

MEMBERS = ["10.0.0.1:5003", "10.0.0.2:5003", "10.0.0.3:5003", "10.0.0.4:5003"]


def digest_ranking(me: str, place: int) -> str:
    """A digest for which `me` ranks at `place` (0: the owner) among MEMBERS."""
    for n in range(10_000):
        digest = f"sha256:{n:064x}"
        if rank(digest, MEMBERS).index(me) == place:
            return digest
    raise AssertionError("no such digest")


class Answer:
    """A peer's 200 as urllib3 shows it to PeerStream."""

    def __init__(self) -> None:
        self.headers = {"Content-Length": "0"}


def replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving: set[str]) -> tuple[Peers, list[tuple[str, bool]]]:
    """This replica (MEMBERS[2]) with `serving` the peers that answer 200; every ask recorded as (peer, flying_only)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    me = MEMBERS[2]
    config = parse_config(
        {
            "ccr": {"registry": "ccr.test"},
            "front": {"peers": [m for m in MEMBERS if m != me], "peerAddress": me, "peerSecret": str(secret)},
        }
    )
    peers = Peers(config.front, Membership(config.front), 4, FrontMetrics())
    asked: list[tuple[str, bool]] = []

    def request(peer: str, flight: Flight, flying_only: bool = False, **_: Any) -> Any:
        asked.append((peer, flying_only))
        if peer not in serving:
            raise PeerUnavailable("answered 404")
        return Answer()

    monkeypatch.setattr(peers, "request", request)
    monkeypatch.setattr(peers_module, "open_upstream", lambda flight: "upstream")
    return peers, asked


def a_flight(digest: str, local_only: bool = False) -> Flight:
    return Flight(cast(Any, type("Origin", (), {"target_repository": "up/app"})()), digest, None, local_only)


def test_a_non_owner_asks_those_ranked_before_it_in_order_and_streams_from_the_first_that_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = digest_ranking(MEMBERS[2], place=2)
    ranked = rank(digest, MEMBERS)
    peers, asked = replica(tmp_path, monkeypatch, serving={ranked[1]})  # the owner does not answer
    flight = a_flight(digest)
    stream = peers.open_blob(flight)
    assert isinstance(stream, PeerStream) and asked == [(ranked[0], False), (ranked[1], False)]
    assert flight.source == ranked[1] and not flight.upstream


def test_with_no_one_before_it_serving_it_asks_the_next_in_rank_flying_only_then_fetches_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = digest_ranking(MEMBERS[2], place=1)
    ranked = rank(digest, MEMBERS)
    peers, asked = replica(tmp_path, monkeypatch, serving=set())
    flight = a_flight(digest)
    assert peers.open_blob(flight) == "upstream"
    assert asked == [(ranked[0], False), (ranked[2], True)]
    assert flight.source is None and flight.upstream


def test_a_new_owner_follows_the_fetch_already_running_at_the_next_in_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = digest_ranking(MEMBERS[2], place=0)
    ranked = rank(digest, MEMBERS)
    peers, asked = replica(tmp_path, monkeypatch, serving={ranked[1]})
    flight = a_flight(digest)
    assert isinstance(peers.open_blob(flight), PeerStream)
    assert asked == [(ranked[1], True)] and flight.source == ranked[1]


def test_a_flight_started_for_a_peer_never_asks_those_ranked_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = digest_ranking(MEMBERS[2], place=3)
    peers, asked = replica(tmp_path, monkeypatch, serving=set(MEMBERS))
    assert peers.open_blob(a_flight(digest, local_only=True)) == "upstream"
    assert asked == []  # the last in rank has no one after it to follow either
