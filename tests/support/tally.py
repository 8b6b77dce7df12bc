"""Counts that tests keep and the run prints at its end (see pytest_terminal_summary in tests/conftest.py), such as
how many generated hostile inputs were tried."""

from __future__ import annotations

from collections import Counter

COUNTS: Counter[str] = Counter()


def count(name: str, amount: int = 1) -> None:
    """Add `amount` to the count called `name`."""
    COUNTS[name] += amount
