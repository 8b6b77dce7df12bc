"""The front's pure parts: the transfer bounds and the Range header."""

from __future__ import annotations

import pytest

from webhook.front.app import byte_range
from webhook.front.flights import RATE_GRACE_SECONDS, FlightFailed, RateGuard


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_minimum_rate_is_judged_after_the_grace_and_the_deadline_always() -> None:
    clock = Clock()
    guard = RateGuard(deadline_seconds=600, min_bytes_per_second=1000, clock=clock)
    clock.now += RATE_GRACE_SECONDS - 1
    guard.check(0)  # still in the grace period
    clock.now += 2
    guard.check(1000 * (RATE_GRACE_SECONDS + 1))  # exactly the minimum
    with pytest.raises(FlightFailed, match="below the minimum 1000") as caught:
        guard.check(999 * (RATE_GRACE_SECONDS + 1))
    assert caught.value.outcome == "too-slow"
    clock.now += 600
    with pytest.raises(FlightFailed, match="longer than 600 s"):
        guard.check(10**12)


def test_no_minimum_rate_when_it_is_zero() -> None:
    clock = Clock()
    guard = RateGuard(deadline_seconds=600, min_bytes_per_second=0, clock=clock)
    clock.now += 500
    guard.check(0)


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
