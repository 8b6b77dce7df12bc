"""The front's pure parts: the Range header."""

from __future__ import annotations

import pytest

from webhook.front.app import byte_range


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
