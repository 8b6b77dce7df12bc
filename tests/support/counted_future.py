"""A Future that counts who waits on it: swapped into a single flight, it tells a test when every caller has joined."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any


class CountedFuture(Future[Any]):
    """Counts the calls to `result` across every instance (reset `waiting` before each test)."""

    waiting = 0
    _lock = threading.Lock()

    def result(self, timeout: float | None = None) -> Any:
        with CountedFuture._lock:
            CountedFuture.waiting += 1
        return super().result(timeout)
