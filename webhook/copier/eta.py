"""How long a copy has left, estimated only once there is a rate to estimate from.

The rate counts from the copy's first streamed byte, not from its start: resolving, fetching manifests
and checking what the target holds take time that says nothing about how fast blobs move, and counting
it made a 6 MB image's first estimate "about 17 min left". Until bytes have moved for MIN_WINDOW_SECONDS
there is no estimate at all.
"""

from __future__ import annotations

from webhook.copier.engine import CopyProgress

MIN_WINDOW_SECONDS = 2.0


class TimeLeft:
    """Follows one copy's progress reports; `seconds_left` is None until a rate can be estimated."""

    def __init__(self, min_window: float = MIN_WINDOW_SECONDS) -> None:
        self._min_window = min_window
        self._first: tuple[float, int] | None = None  # (seconds, bytes copied) at the first streamed byte

    def seconds_left(self, progress: CopyProgress) -> float | None:
        """Seconds until `progress` reaches its total at the rate since the first byte, or None if unknown yet."""
        if self._first is None or progress.seconds < self._first[0] or progress.bytes_copied < self._first[1]:
            # the first byte, or the copy began again (a retry): count from here
            self._first = (progress.seconds, progress.bytes_copied) if progress.bytes_copied > 0 else None
            return None
        seconds, copied = progress.seconds - self._first[0], progress.bytes_copied - self._first[1]
        if seconds < self._min_window or copied <= 0:
            return None
        return max(0, progress.bytes_total - progress.bytes_done) / (copied / seconds)


def time_left_text(seconds: float | None) -> str:
    """ "about 30 s left", "about 4 min left"; rounded as an estimate deserves."""
    if seconds is None:
        return "time left not known yet"
    if seconds < 10:
        return "a few seconds left"
    if seconds < 90:
        return f"about {5 * round(seconds / 5):.0f} s left"
    return f"about {round(seconds / 60):.0f} min left"
