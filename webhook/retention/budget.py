"""The storage budget seen from a writer: what the CCR holds now, and whether a new blob fits under `maxBytes`.

For whatever writes into the CCR (the front committing a cold fetch, the warmer), so a write that cannot
fit is refused before it starts, with a message saying why, instead of failing once the disk is full.
What the CCR holds is the unique blob bytes of the mirrored images (webhook.retention.inventory), the same
measure retention evicts against and `ccr_webhook_storage_bytes` shows; it works on every storage driver,
filesystem or S3. Reading it walks every manifest, so it is read at most every `max_age_seconds` and
the writes in between are added to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from webhook.retention.inventory import BuildTimes, CCRReader, read_inventory
from webhook.retention.plan import format_bytes, unique_bytes


def budget_refusal(stored_bytes: int, incoming_bytes: int, max_bytes: int | None) -> str | None:
    """Why a write of `incoming_bytes` must not start when the CCR holds `stored_bytes`; None when it fits."""
    if max_bytes is None or stored_bytes + incoming_bytes <= max_bytes:
        return None
    return (
        f"the CCR holds {format_bytes(stored_bytes)} of its {format_bytes(max_bytes)} budget (retention.maxBytes); "
        f"{format_bytes(incoming_bytes)} more does not fit. Retention evicts unused images at its next run; "
        "or raise retention.maxBytes"
    )


class StoredBytes:
    """What the CCR holds, read from it at most every `max_age_seconds`, plus the writes `add`ed since.

    One caller reads the CCR at a time; while it does, the others get the last reading at once rather than wait
    (only the very first reading makes them wait).
    """

    def __init__(
        self,
        ccr: CCRReader,
        prefixes: Iterable[str],
        max_age_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ccr = ccr
        self._prefixes = tuple(prefixes)
        self._max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()  # guards the numbers below
        self._reading = threading.Lock()  # held by the one caller reading the CCR (and guards its BuildTimes)
        self._build_times = BuildTimes()
        self._bytes = 0
        self._added_while_reading = 0
        self._read_at: float | None = None

    def current(self) -> int:
        """The bytes the CCR holds: read again when the last reading is older than `max_age_seconds`.

        Raises the registry's errors when it cannot be read (the caller decides whether to write anyway).
        """
        if not self._stale() or not self._reading.acquire(blocking=self._read_at is None):
            with self._lock:
                return self._bytes
        try:
            if self._stale():
                with self._lock:
                    self._added_while_reading = 0
                held = read_inventory(self._ccr, self._prefixes, build_times=self._build_times)
                stored = unique_bytes([*held.images, *held.orphans])
                with self._lock:  # a write added during the reading may be in it or not: counted, to be safe
                    self._bytes, self._read_at = stored + self._added_while_reading, self._clock()
        finally:
            self._reading.release()
        with self._lock:
            return self._bytes

    def add(self, written_bytes: int) -> None:
        """Count a write made since the last reading (a committed blob), until the next reading sees it."""
        with self._lock:
            self._bytes += written_bytes
            self._added_while_reading += written_bytes

    def _stale(self) -> bool:
        with self._lock:
            return self._read_at is None or self._clock() - self._read_at >= self._max_age_seconds
