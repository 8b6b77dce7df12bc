"""Who owns a blob among the front replicas (pure rendezvous hashing), and the peering keys."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from webhook.config import ConfigError, parse_config
from webhook.front.owners import rank
from webhook.front.peers import own_address

PEERS = ["10.0.0.1:5003", "10.0.0.2:5003", "10.0.0.3:5003"]
DIGESTS = [f"sha256:{hashlib.sha256(str(n).encode()).hexdigest()}" for n in range(3000)]
MINIMAL = {"ccr": {"registry": "ccr.test"}}


def test_every_replica_ranks_the_same_whatever_order_it_lists_the_peers_in() -> None:
    for digest in DIGESTS[:100]:
        assert rank(digest, PEERS) == rank(digest, list(reversed(PEERS))) == rank(digest, [*PEERS, PEERS[0]])
        assert sorted(rank(digest, PEERS)) == sorted(PEERS)


def test_owners_spread_evenly() -> None:
    owners = Counter(rank(digest, PEERS)[0] for digest in DIGESTS)
    assert set(owners) == set(PEERS)
    assert all(900 <= count <= 1100 for count in owners.values()), owners


def test_a_peer_leaving_moves_only_its_own_digests_each_to_its_runner_up() -> None:
    gone = PEERS[1]
    for digest in DIGESTS:
        before, after = rank(digest, PEERS), rank(digest, [peer for peer in PEERS if peer != gone])
        assert after == [peer for peer in before if peer != gone]


def test_a_peer_joining_takes_only_the_digests_it_now_ranks_first_for() -> None:
    joined = [*PEERS, "10.0.0.4:5003"]
    moved = 0
    for digest in DIGESTS:
        before, after = rank(digest, PEERS)[0], rank(digest, joined)[0]
        if after != before:
            assert after == joined[-1]
            moved += 1
    assert 600 <= moved <= 900  # about a quarter


@pytest.mark.parametrize(
    ("address", "listen", "expected"),
    [
        ("10.1.2.3", "0.0.0.0:5003", "10.1.2.3:5003"),
        ("10.1.2.3:6000", "0.0.0.0:5003", "10.1.2.3:6000"),
        ("fd00::7", "[::]:5003", "[fd00::7]:5003"),
        ("[fd00::7]:6000", "[::]:5003", "[fd00::7]:6000"),
    ],
)
def test_own_address(address: str, listen: str, expected: str) -> None:
    front = {"peers": ["10.9.9.9:5003"], "peerAddress": address, "peerListen": listen, "peerSecret": "/s"}
    assert own_address(parse_config({**MINIMAL, "front": front}).front) == expected


@pytest.mark.parametrize(
    ("front", "message"),
    [
        ({"peers": ["a:1"], "peerSecret": "/s"}, "front.peerAddress: is required when peers or peerService is set"),
        ({"peers": ["a:1"], "peerAddress": "a"}, "front.peerSecret: is required"),
        ({"peers": ["a:1", "a:1"], "peerAddress": "a", "peerSecret": "/s"}, "front.peers: a peer is listed twice"),
        ({"peers": ["a"], "peerAddress": "a", "peerSecret": "/s"}, "front.peers: 'a' must be host:port"),
        ({"peers": ["a:1"], "peerService": "ccr", "peerAddress": "a", "peerSecret": "/s"}, "set peers or peerService"),
        (
            {"peers": ["a:1"], "peerAddress": "a", "peerSecret": "/s", "peerTlsCert": "/c", "peerTlsKey": "/k"},
            "front.peerCaFile: is required with peerTlsCert",
        ),
    ],
)
def test_peering_keys_name_what_is_missing(front: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config({**MINIMAL, "front": front})


ADR = Path(__file__).resolve().parent.parent / "docs/decisions/0005-front-peer-protocol.md"


def test_the_decision_records_formula_predicts_the_owners_the_code_picks() -> None:
    """The ranking written in ADR 0005 (its python block, run as written) against owners.rank, and its example."""
    text = ADR.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert block is not None, "ADR 0005 states the ranking as a python block"
    namespace: dict[str, Any] = {"hashlib": hashlib}
    exec(block.group(1), namespace)
    documented = namespace["rank"]
    members = [*PEERS, "[fd00::7]:5003"]
    for digest in DIGESTS:
        assert documented(digest, members) == rank(digest, members), digest
    hello = f"sha256:{hashlib.sha256(b'hello').hexdigest()}"
    assert hello in text and rank(hello, PEERS)[:2] == ["10.0.0.1:5003", "10.0.0.2:5003"]
    assert "`10.0.0.1:5003` owns it, `10.0.0.2:5003` is next" in text
