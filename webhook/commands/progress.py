"""Copies run from the command line and shown on a terminal: progress, one line per result, a summary, an exit code.

On a terminal the progress is one line redrawn in place (at most ten times a second); anywhere else (a CI
log, a pipe) it is a plain line whenever a blob finishes or the copy moves on, so logs stay short. Either
way a line comes at least every EVERY_SECONDS, with the rate and the time left once it can be estimated,
so a multi-GB layer or a stalled registry is never silence: "no bytes for 25 s" says which it is.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from webhook.copier.engine import CopyError, CopyProgress, CopyResult
from webhook.copier.eta import TimeLeft, time_left_text
from webhook.registry.errors import RegistryError

REDRAW_SECONDS = 0.1
EVERY_SECONDS = 10.0  # the longest a copy's progress stays unreported, terminal or not
TICK_SECONDS = 1.0  # how often the ticker thread checks that


@dataclass(frozen=True)
class CopyJob:
    """One copy to run: a label for people, and the copy itself, given the progress callback."""

    label: str
    run: Callable[[Callable[[CopyProgress], None]], CopyResult]


def size_text(count: float) -> str:
    """A byte count for people: 512 B, 3.2 MiB, 1.0 GiB."""
    units = ("B", "KiB", "MiB", "GiB")
    power = 0
    while count >= 1024 and power < len(units) - 1:
        count /= 1024
        power += 1
    return f"{count:.0f} B" if power == 0 else f"{count:.1f} {units[power]}"


def progress_text(progress: CopyProgress, seconds_left: float | None = None) -> str:
    """One line: blobs and bytes done of the total, the rate, the time left if known, the phase after the blobs."""
    percent = 100 * progress.bytes_done / progress.bytes_total if progress.bytes_total else 100.0
    phase = {"blobs": "", "manifests": "  pushing manifests"}.get(progress.phase, f"  {progress.phase}")
    left = f"  {time_left_text(seconds_left)}" if seconds_left is not None and progress.phase == "blobs" else ""
    return (
        f"blobs {progress.blobs_done}/{progress.blobs_total}  {size_text(progress.bytes_done)} / "
        f"{size_text(progress.bytes_total)} ({percent:.0f}%)  {size_text(progress.rate)}/s{left}{phase}"
    )


def result_text(result: CopyResult) -> str:
    """What a finished copy did, in one line."""
    if not result.manifests:
        return f"{result.digest}: already there ({result.seconds:.2f} s)"
    rate = result.bytes_copied / result.seconds if result.seconds > 0 else 0.0
    return (
        f"{result.digest}: {result.blobs_copied} blobs copied ({size_text(result.bytes_copied)}), "
        f"{result.blobs_skipped} already there, {result.blobs_mounted} mounted, {len(result.manifests)} manifests, "
        f"{result.seconds:.1f} s, {size_text(rate)}/s"
    )


class ProgressDisplay:
    """Shows a copy's progress on `stream` under `label`; thread-safe, as the copy's threads report.

    start() runs a ticker that calls tick() every TICK_SECONDS, so the line comes even when the copy
    reports nothing (a stalled or very slow blob); tests call tick() themselves with a fake `clock`.
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = EVERY_SECONDS,
    ) -> None:
        self._stream, self._label = stream, label
        self._interactive = stream.isatty() if interactive is None else interactive
        self._clock, self._every = clock, every
        self._lock = threading.Lock()
        self._drawn_at = self._heard_at = clock()
        self._last: CopyProgress | None = None
        self._last_step: tuple[str, int] | None = None
        self._line_open = False
        self._time_left = TimeLeft()
        self._seconds_left: float | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, progress: CopyProgress) -> None:
        with self._lock:
            now = self._clock()
            self._last, self._heard_at = progress, now
            self._seconds_left = self._time_left.seconds_left(progress)
            step = (progress.phase, progress.blobs_done)
            due = now - self._drawn_at >= (REDRAW_SECONDS if self._interactive else self._every)
            if step != self._last_step or due or progress.phase == "done":
                self._last_step = step
                self._show(progress, now)

    def tick(self) -> None:
        """Show the last progress again if nothing was shown for `every` seconds, saying how long no byte came."""
        with self._lock:
            now = self._clock()
            if self._last is None or now - self._drawn_at < self._every:
                return
            quiet = now - self._heard_at
            self._show(self._last, now, f"  no bytes for {quiet:.0f} s" if quiet >= self._every else "")

    def _show(self, progress: CopyProgress, now: float, note: str = "") -> None:
        self._drawn_at = now
        text = progress_text(progress, self._seconds_left) + note
        if not self._interactive:
            self._stream.write(f"{self._label}: {text}\n")
        else:
            width = shutil.get_terminal_size((100, 24)).columns
            line = f"{text}  {self._label}"  # the numbers first: a narrow terminal cuts the name
            self._stream.write("\r" + line[: width - 1] + "\x1b[K")
            self._line_open = True
        self._stream.flush()

    def start(self) -> ProgressDisplay:
        """Run the ticker until close()."""
        self._ticker = threading.Thread(target=self._tick_until_closed, name="progress", daemon=True)
        self._ticker.start()
        return self

    def _tick_until_closed(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self.tick()

    def close(self) -> None:
        """Stop the ticker and end the redrawn line, so what follows starts on a line of its own."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * TICK_SECONDS)
        with self._lock:
            if self._line_open:
                self._stream.write("\r\x1b[K")
                self._line_open = False


def run_copies(jobs: Sequence[CopyJob], out: TextIO, err: TextIO, verb: str = "copied") -> int:
    """Run `jobs` one after another with progress, a line per result and a summary; 1 if any failed, else 0."""
    failed = 0
    for job in jobs:
        display = ProgressDisplay(out, job.label).start()
        try:
            result = job.run(display)
        except (CopyError, RegistryError) as error:
            display.close()
            err.write(f"FAILED {job.label}: {error}\n")
            failed += 1
        else:
            display.close()
            out.write(f"{verb} {job.label} {result_text(result)}\n")
        out.flush()
    if len(jobs) > 1:
        out.write(f"{len(jobs) - failed} of {len(jobs)} images {verb}, {failed} failed\n")
    return 1 if failed else 0
