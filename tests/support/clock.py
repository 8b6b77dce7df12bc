"""The one fake clock of the tests: time moves only when the test (or a fake sleep) moves it."""

from __future__ import annotations


class Clock:
    """A monotonic-style clock to pass where code takes `clock=`; `sleep` advances it instead of waiting."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Let `seconds` pass at once."""
        self.now += seconds
