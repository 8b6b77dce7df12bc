"""Retry one registry step that failed for a passing reason (unreachable, 5xx, rate limited), with backoff.

Only RegistryUnavailable and RateLimited are retried: a missing image, refused credentials or a digest
mismatch will not change by asking again, and a transfer that fell below its minimum rate is not tried
again at once (the upstream is slow now). The waits are short: a copy that still fails after them raises,
and the warm queue retries the whole (idempotent) copy later on its own, longer schedule.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from webhook.registry.errors import RateLimited, RegistryUnavailable
from webhook.registry.streams import TransferTooSlow

T = TypeVar("T")
TRANSIENT_ERRORS = (RegistryUnavailable, RateLimited)


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all, waiting `backoff_seconds` doubled each time (or the registry's Retry-After)."""

    attempts: int = 4
    backoff_seconds: float = 0.5
    max_wait_seconds: float = 10.0  # a longer Retry-After is not waited out here: the error goes to the caller

    def run(self, operation: Callable[[], T], stop: threading.Event | None = None) -> T:
        """The result of `operation`, trying again after a transient error; `stop` set ends the waiting early."""
        stop = stop or threading.Event()
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except TRANSIENT_ERRORS as err:
                retry_after = getattr(err, "retry_after", None) or 0.0
                if attempt == self.attempts or retry_after > self.max_wait_seconds or isinstance(err, TransferTooSlow):
                    raise
                if stop.wait(max(self.backoff_seconds * 2 ** (attempt - 1), retry_after)):
                    raise
        raise ValueError(f"RetryPolicy.attempts must be at least 1, not {self.attempts}")
