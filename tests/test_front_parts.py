"""The front's parts that need no server: the Range header, a flight's change of source."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from webhook.front.app import byte_range
from webhook.front.flights import Flight


@pytest.mark.parametrize(
    ("header", "wanted"),
    [
        (None, (0, 1000)),
        ("bytes=0-", (0, 1000)),
        ("bytes=100-199", (100, 200)),
        ("bytes=900-5000", (900, 1000)),
        ("bytes=-100", (900, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=1000-", None),
        ("bytes=200-100", None),
        ("bytes=0-1,5-6", (0, 1000)),  # several ranges: the whole blob, as RFC 9110 allows
        ("items=0-1", (0, 1000)),
    ],
)
def testbyte_ranges(header: str | None, wanted: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == wanted


def a_flight_from(peer: str) -> Flight:
    flight = Flight(cast(Any, None), "sha256:" + "0" * 64, None)
    flight.stream_from(peer)
    return flight


def test_a_peer_asked_after_its_source_broke_off_answers_once_it_has_taken_over() -> None:
    flight = a_flight_from("10.0.0.1:5003")
    threading.Timer(0.2, flight.stream_from, [None]).start()  # this replica notices the break too, and takes over
    started = time.monotonic()
    flight.wait_source_left("10.0.0.1:5003", timeout=10)
    assert 0.15 < time.monotonic() - started < 5 and flight.source is None and flight.upstream


def test_the_wait_for_a_takeover_is_bounded() -> None:
    flight = a_flight_from("10.0.0.1:5003")
    started = time.monotonic()
    flight.wait_source_left("10.0.0.1:5003", timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3 and flight.source == "10.0.0.1:5003" and not flight.upstream
    flight.wait_source_left("10.0.0.2:5003", timeout=10)  # it streams from another peer: no wait at all
    assert time.monotonic() - started < 3
