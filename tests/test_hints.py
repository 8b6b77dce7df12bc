"""The webhook <-> warmer hint protocol: bodies round-trip or say what is wrong, loopback only, never blocking."""

from __future__ import annotations

import json

import pytest

from tests.support.warm_requests import warm_request
from webhook.hints import BadHints, Hint, HintClient, HintResult, encode_hints, hints_route, parse_hints
from webhook.http_service import Request, is_loopback


def test_hints_round_trip_and_bad_bodies_say_what_is_wrong():
    request = warm_request()
    assert parse_hints(encode_hints([request])) == [Hint(str(request.source), str(request.target))]
    assert parse_hints(b'{"requests": [{"source": "nginx:1"}]}') == [Hint("nginx:1", None)]
    for body, message in [
        (b"{", "not JSON"),
        (b"[]", '{"requests"'),
        (b'{"requests": [{"source": 1}]}', r"requests\[0\]"),
        (json.dumps({"requests": [{"source": "a"}] * 65}).encode(), "at most 64"),
    ]:
        with pytest.raises(BadHints, match=message):
            parse_hints(body)


def test_loopback_peers_are_told_apart_and_the_hint_wait_is_capped():
    for peer, loopback in [("10.1.2.3", False), ("::ffff:192.168.1.1", False), ("127.0.0.1", True), ("::1", True)]:
        assert is_loopback(peer) is loopback
    waits = []
    route = hints_route(lambda hints, wait: waits.append(wait) or [HintResult(h.source, None, "queued") for h in hints])
    body = encode_hints([warm_request()])
    assert route(Request("POST", "/hints", {"wait": "600"}, body, "127.0.0.1")).status == 200
    assert waits == [30.0]
    assert route(Request("POST", "/hints", {"wait": "soon"}, body, "127.0.0.1")).status == 400


def test_a_hint_client_whose_warmer_is_down_drops_and_counts_without_blocking():
    counted: list[tuple[str, int]] = []
    client = HintClient(
        "http://127.0.0.1:9", timeout=0.2, backlog=1, on_result=lambda result, n: counted.append((result, n))
    )
    client.send([warm_request(), warm_request(), warm_request()])  # returns at once; the backlog holds one
    assert client.warm([warm_request()], timeout=0.1) == set()
    assert ("dropped", 1) in counted  # the forced warm
    assert sum(n for result, n in counted if result == "dropped") >= 2  # and what did not fit the backlog
