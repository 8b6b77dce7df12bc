"""Waiting for something another thread or process does, bounded so a broken test fails instead of hanging."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, what: str = "the condition") -> T:
    """The first truthy value of `predicate()`, polled; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


def deadline_ceiling(deadline: float) -> float:
    """The wall time a test allows for an answer due within `deadline` seconds: 3x plus a second, so a loaded
    2-core CI does not flake. A timeout the answer must not have waited out is set well above it."""
    return 3 * deadline + 1.0
