"""Copies run from the command line and shown on a terminal: progress, one line per result, a summary, an exit code.

On a terminal the progress is one line redrawn in place (at most ten times a second); anywhere else (a CI
log, a pipe) it is a plain line whenever a blob finishes or the copy moves on, so logs stay short.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from webhook.copier.engine import CopyError, CopyProgress, CopyResult
from webhook.registry.errors import RegistryError

REDRAW_SECONDS = 0.1


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


def progress_text(progress: CopyProgress) -> str:
    """One line: blobs and bytes done of the total, the rate, and the phase once the blobs are done."""
    percent = 100 * progress.bytes_done / progress.bytes_total if progress.bytes_total else 100.0
    phase = {"blobs": "", "manifests": "  pushing manifests"}.get(progress.phase, f"  {progress.phase}")
    return (
        f"blobs {progress.blobs_done}/{progress.blobs_total}  {size_text(progress.bytes_done)} / "
        f"{size_text(progress.bytes_total)} ({percent:.0f}%)  {size_text(progress.rate)}/s{phase}"
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
    """Shows a copy's progress on `stream` under `label`; thread-safe, as the copy's threads report."""

    def __init__(self, stream: TextIO, label: str, interactive: bool | None = None) -> None:
        self._stream, self._label = stream, label
        self._interactive = stream.isatty() if interactive is None else interactive
        self._lock = threading.Lock()
        self._drawn_at = 0.0
        self._last_step: tuple[str, int] | None = None
        self._line_open = False

    def __call__(self, progress: CopyProgress) -> None:
        with self._lock:
            if self._interactive:
                self._redraw(progress)
                return
            step = (progress.phase, progress.blobs_done)
            if step != self._last_step:
                self._last_step = step
                self._stream.write(f"{self._label}: {progress_text(progress)}\n")
                self._stream.flush()

    def _redraw(self, progress: CopyProgress) -> None:
        now = time.monotonic()
        if now - self._drawn_at < REDRAW_SECONDS and progress.phase != "done":
            return
        self._drawn_at = now
        width = shutil.get_terminal_size((100, 24)).columns
        line = f"{progress_text(progress)}  {self._label}"  # the numbers first: a narrow terminal cuts the name
        self._stream.write("\r" + line[: width - 1] + "\x1b[K")
        self._stream.flush()
        self._line_open = True

    def close(self) -> None:
        """End the redrawn line, so what follows starts on a line of its own."""
        with self._lock:
            if self._line_open:
                self._stream.write("\r\x1b[K")
                self._line_open = False


def run_copies(jobs: Sequence[CopyJob], out: TextIO, err: TextIO, verb: str = "copied") -> int:
    """Run `jobs` one after another with progress, a line per result and a summary; 1 if any failed, else 0."""
    failed = 0
    for job in jobs:
        display = ProgressDisplay(out, job.label)
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
