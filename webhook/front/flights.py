"""Single flight per blob: one upstream fetch, spooled to disk, followed by every reader as it grows.

A Flight is one blob of one CCR repository being fetched from its upstream. Readers join it at any
moment: they read what the spool holds at disk speed, then wait for more. The last byte of every answer
(the whole blob or a Range of it) is held back until the whole blob has been sha256-verified, so no
reader ever completes an answer with wrong bytes: on a digest mismatch, an upstream that breaks off,
a transfer slower than the minimum rate or past its deadline, the flight fails and every reader's
answer is cut short. A verified blob is uploaded from the spool into the CCR, and the flight leaves the
table: later readers get it from the CCR. A flight's state is named (FlightState: FETCHING, VERIFIED,
COMMITTED; PRESENT, UNCOMMITTED, FAILED) and changed only by its own methods; readers wait on its
condition with deadlines. The spool has a byte cap; a fetch that would not fit is refused (SpoolFull), not
streamed unspooled, because late readers and the commit both need the bytes on disk. A blob that would take
the CCR past its storage budget is refused (OverBudget) as soon as its size is known, before it is spooled.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Protocol

from webhook.config import ConfigError
from webhook.errors import CCRWebhookError
from webhook.front.metrics import FrontMetrics
from webhook.front.upstream import Origin
from webhook.registry.client import RegistryClient
from webhook.registry.errors import RegistryError, RegistryProtocolError
from webhook.registry.streams import BlobStream, MinimumRate, TransferTooSlow

log = logging.getLogger("webhook.front")
CHUNK_BYTES = 1024 * 1024
MAX_FLIGHTS = 1024  # blobs fetching or waiting for a fetch slot at once
RATE_WINDOW_SECONDS = 10.0  # the minimum rate is judged over windows this long (connection set-up, slow start)
READER_SLACK_SECONDS = 60.0  # a reader waits at most the fetch deadline plus this for bytes


class FlightFailed(CCRWebhookError):
    """A blob fetch failed; `outcome` is the metrics label, the message says why (no upstream secrets), `fields`
    go into the JSON log line of the failure."""

    def __init__(self, message: str, outcome: str = "upstream-error", fields: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.fields = fields or {}


class SpoolFull(FlightFailed):
    """The spool has no room for another blob (or too many fetches wait): try again later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "spool-full")


class OverBudget(FlightFailed):
    """The blob does not fit under the CCR's storage budget (retention.maxBytes): refused before its first byte."""

    def __init__(self, message: str, fields: dict[str, object]) -> None:
        super().__init__(message, "over-budget", fields)


class Spool:
    """The spool directory with a byte cap; emptied at start, since a fetch cut by a restart is never resumed."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._reserved = 0
        self._lock = threading.Lock()
        shutil.rmtree(self.directory / "blobs", ignore_errors=True)
        try:
            (self.directory / "blobs").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"front.spoolDir: cannot use {directory}: {err.strerror}") from None

    @property
    def reserved(self) -> int:
        """Bytes set aside for the blobs being fetched now."""
        return self._reserved

    def reserve(self, size: int) -> Path:
        """A new, empty spool file with `size` bytes set aside for it; SpoolFull if they do not fit."""
        with self._lock:
            if self._reserved + size > self.max_bytes:
                raise SpoolFull(
                    f"the spool holds {self._reserved} of {self.max_bytes} bytes and cannot take {size} more"
                )
            self._reserved += size
        path = self.directory / "blobs" / uuid.uuid4().hex
        try:
            path.touch()
        except OSError:
            self.release(path, size)
            raise
        return path

    def release(self, path: Path, size: int) -> None:
        """Remove a spool file and give its bytes back (readers still holding it open read on)."""
        path.unlink(missing_ok=True)
        with self._lock:
            self._reserved -= size


class FlightState(enum.Enum):
    """Where a flight is: FETCHING, then VERIFIED, then COMMITTED; or PRESENT, UNCOMMITTED or FAILED at the end."""

    FETCHING = "fetching"  # waiting for a fetch slot, or bytes arriving: every reader's last byte is held back
    VERIFIED = "verified"  # every byte spooled and the digest checked: readers may finish; being committed
    COMMITTED = "committed"  # the CCR holds the blob now, uploaded by this flight (or by the owner it followed)
    PRESENT = "present"  # the CCR held the blob already: readers go there
    UNCOMMITTED = "uncommitted"  # verified, but the upload failed: readers finish from the spool, the CCR lacks it
    FAILED = "failed"  # the fetch failed (`error` says why): every reader's answer is cut short


_NEXT = {
    FlightState.FETCHING: frozenset({FlightState.VERIFIED, FlightState.PRESENT, FlightState.FAILED}),
    FlightState.VERIFIED: frozenset({FlightState.COMMITTED, FlightState.UNCOMMITTED}),
}
_ENDED = frozenset({FlightState.COMMITTED, FlightState.PRESENT, FlightState.UNCOMMITTED, FlightState.FAILED})
_COMPLETE = frozenset({FlightState.VERIFIED, FlightState.COMMITTED, FlightState.UNCOMMITTED})


class Flight:
    """One blob being fetched: its named state, its size once known, the bytes spooled so far, where they come from.

    Only its own methods change it, under its condition, waking whoever waits; every wait has a deadline."""

    def __init__(self, origin: Origin, digest: str, expected_size: int | None, local_only: bool = False) -> None:
        self.origin, self.digest, self.expected_size = origin, digest, expected_size
        self.local_only = local_only  # started for a peer: fetched here, never from another peer
        self._state = FlightState.FETCHING
        self._error: FlightFailed | None = None
        self._source: str | None = None  # the peer it is streamed from; None: upstream (this replica owns it)
        self._upstream = False  # decided: this replica fetches it from upstream (peers may follow it)
        self._size: int | None = None
        self._path: Path | None = None
        self._written = 0
        self._condition = threading.Condition()

    @property
    def key(self) -> tuple[str, str]:
        return (self.origin.target_repository, self.digest)

    @property
    def state(self) -> FlightState:
        return self._state

    @property
    def error(self) -> FlightFailed | None:
        """Why the flight failed (set with FAILED only)."""
        return self._error

    @property
    def source(self) -> str | None:
        """The peer the bytes come from; None while undecided or from upstream."""
        return self._source

    @property
    def upstream(self) -> bool:
        """Whether this replica decided to fetch the blob from upstream itself (peers may follow it then)."""
        return self._upstream

    @property
    def size(self) -> int | None:
        return self._size

    @property
    def path(self) -> Path | None:
        """The spool file, once the size is known."""
        return self._path

    @property
    def written(self) -> int:
        return self._written

    @property
    def present(self) -> bool:
        """Whether the CCR turned out to hold the blob already (readers go there)."""
        return self._state is FlightState.PRESENT

    def readable(self, end: int) -> int:
        """How far into [0, end) a reader may read now: to `end` once verified, else short of it by one byte."""
        return min(self._written, end if self._state in _COMPLETE else end - 1)

    # -- changes, by the flight's fetch (Flights) and its peer stream ---------------------------------------

    def spooling(self, path: Path, size: int) -> None:
        """The size is known and the bytes go to `path`: readers may start."""
        with self._condition:
            self._path, self._size = path, size
            self._condition.notify_all()

    def received(self, count: int) -> None:
        """`count` more bytes are in the spool file."""
        with self._condition:
            self._written += count
            self._condition.notify_all()

    def stream_from(self, peer: str | None) -> None:
        """From now on the bytes come from `peer`, or (None) from upstream by this replica; wakes who waits on it."""
        with self._condition:
            self._source = peer
            self._upstream = self._upstream or peer is None
            self._condition.notify_all()

    def mark_verified(self) -> None:
        self._move(FlightState.VERIFIED)

    def mark_committed(self) -> None:
        self._move(FlightState.COMMITTED)

    def mark_present(self) -> None:
        self._move(FlightState.PRESENT)

    def mark_uncommitted(self) -> None:
        self._move(FlightState.UNCOMMITTED)

    def fail(self, error: FlightFailed) -> None:
        """The fetch failed: every reader waiting for bytes gets `error`."""
        self._move(FlightState.FAILED, error)

    def _move(self, state: FlightState, error: FlightFailed | None = None) -> None:
        with self._condition:
            if state not in _NEXT.get(self._state, ()):
                raise ValueError(f"blob {self.digest}: a flight cannot go from {self._state.value} to {state.value}")
            self._state, self._error = state, error
            self._condition.notify_all()

    # -- waits ------------------------------------------------------------------------------------------------

    def wait_started(self, timeout: float) -> None:
        """Wait until the size is known (or the blob turned out present); FlightFailed if it failed or timed out."""
        with self._condition:
            started = self._condition.wait_for(
                lambda: self._size is not None or self._state is not FlightState.FETCHING, timeout
            )
            if self._error is not None:
                raise self._error
            if not started:
                raise FlightFailed(f"blob {self.digest}: the fetch did not start within {timeout:g} s")

    def follow(self, start: int, end: int, timeout: float) -> Iterator[tuple[int, int]]:
        """(offset, count) pieces of bytes [start, end) as they become readable; FlightFailed if the fetch fails."""
        deadline = time.monotonic() + timeout
        position = start
        while position < end:
            with self._condition:
                if not self._condition.wait_for(partial(self._moved_past, position, end), deadline - time.monotonic()):
                    raise FlightFailed(f"blob {self.digest}: no new bytes within {timeout:g} s")
                available = self.readable(end)
                if available <= position:
                    assert self._error is not None
                    raise self._error
            yield position, available - position
            position = available

    def _moved_past(self, position: int, end: int) -> bool:
        return self.readable(end) > position or self._error is not None

    def wait_source_left(self, peer: str, timeout: float) -> None:
        """Wait up to `timeout` while the bytes still come from `peer` (which broke off, so that will change)."""
        with self._condition:
            self._condition.wait_for(lambda: self._source != peer or self._error is not None, timeout)

    def wait_ended(self, timeout: float) -> FlightState | None:
        """The state the flight ended in (COMMITTED, PRESENT, UNCOMMITTED, FAILED), or None if not within `timeout`."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._state in _ENDED, timeout):
                return None
            return self._state


class BlobSource(Protocol):
    """What a flight reads a blob from: its size, and verified pieces (b'' once the digest has been checked)."""

    size: int | None

    def read(self, amount: int) -> bytes: ...

    def hold_to(self, rule: MinimumRate) -> None: ...

    def __enter__(self) -> BlobSource: ...

    def __exit__(self, *exc: object) -> None: ...


def open_upstream(flight: Flight) -> BlobStream:
    """The blob's download from the upstream its CCR repository mirrors."""
    return flight.origin.client.open_blob(flight.origin.repository, flight.digest)


class Flights:
    """The table of blob fetches in progress, one per (CCR repository, digest), and the threads running them."""

    def __init__(
        self,
        ccr: RegistryClient,
        spool: Spool,
        metrics: FrontMetrics,
        *,
        max_concurrent_fetches: int,
        fetch_deadline_seconds: float,
        min_bytes_per_second: int,
        commit_blob: Callable[[Flight], None],
        open_blob: Callable[[Flight], BlobSource] | None = None,
        admit: Callable[[Flight, int], None] | None = None,
    ) -> None:
        """`admit(flight, size)` is asked before a blob's bytes are spooled (OverBudget: they do not fit)."""
        self._ccr, self._spool, self._metrics = ccr, spool, metrics
        self._slots = threading.BoundedSemaphore(max_concurrent_fetches)
        self.fetch_deadline_seconds = fetch_deadline_seconds
        # The copy engine's rule, over windows of RATE_WINDOW_SECONDS (0 bytes per second: the deadline alone).
        self._pace = MinimumRate(
            window_bytes=int(min_bytes_per_second * RATE_WINDOW_SECONDS),
            window_seconds=RATE_WINDOW_SECONDS,
            deadline_seconds=fetch_deadline_seconds,
            setting="front.minBytesPerSecond, front.fetchDeadlineSeconds",
        )
        self._commit_blob = commit_blob
        self._open_blob = open_blob or open_upstream
        self._admit = admit or (lambda flight, size: None)
        self._flights: dict[tuple[str, str], Flight] = {}
        self._lock = threading.Lock()

    @property
    def reader_timeout(self) -> float:
        """How long a reader waits for the next bytes of a flight at most."""
        return self.fetch_deadline_seconds + READER_SLACK_SECONDS

    def ensure(self, origin: Origin, digest: str, expected_size: int | None = None, local_only: bool = False) -> Flight:
        """The flight of `digest` into `origin`'s CCR repository, started if none runs; SpoolFull if too many do.

        `local_only`: a flight started here must fetch the blob itself rather than from a peer."""
        with self._lock:
            flight = self._flights.get((origin.target_repository, digest))
            if flight is not None:
                return flight
            if len(self._flights) >= MAX_FLIGHTS:
                raise SpoolFull(f"{MAX_FLIGHTS} blob fetches are in progress or waiting already")
            flight = Flight(origin, digest, expected_size, local_only)
            self._flights[flight.key] = flight
        threading.Thread(target=self._run, args=(flight,), name=f"flight-{digest[7:19]}", daemon=True).start()
        return flight

    def find(self, repository: str, digest: str) -> Flight | None:
        """The flight of `digest` into CCR repository `repository`, if one runs."""
        with self._lock:
            return self._flights.get((repository, digest))

    def open_spool(self, flight: Flight) -> int | None:
        """A file descriptor of `flight`'s spool file, or None when the flight has left the table (read the CCR)."""
        with self._lock:
            if self._flights.get(flight.key) is not flight or flight.path is None:
                return None
            return os.open(flight.path, os.O_RDONLY)

    def _run(self, flight: Flight) -> None:
        outcome = "committed"
        try:
            if not self._slots.acquire(timeout=self.fetch_deadline_seconds):
                raise FlightFailed(f"blob {flight.digest}: no fetch slot within {self.fetch_deadline_seconds:g} s")
            try:
                if self._ccr.blob_size(flight.origin.target_repository, flight.digest) is not None:
                    outcome = "present"
                    flight.mark_present()
                else:
                    self._fetch(flight)
            finally:
                self._slots.release()
            if outcome == "committed":
                try:
                    self._commit_blob(flight)
                    flight.mark_committed()
                except (RegistryError, ValueError, OSError) as err:
                    outcome = "commit-failed"
                    log.warning("blob %s verified but not committed to the CCR: %s", flight.digest, err)
                    flight.mark_uncommitted()
        except FlightFailed as err:
            outcome = err.outcome
            fields = {"outcome": outcome, **err.fields}
            log.warning("blob %s from %s: %s", flight.digest, flight.origin.registry, err, extra={"fields": fields})
            flight.fail(err)
        except RegistryError as err:
            outcome = _outcome_of(err)
            log.warning("blob %s from %s: %s", flight.digest, flight.origin.registry, err)
            flight.fail(FlightFailed(f"blob {flight.digest}: {err}", outcome))
        except Exception as err:  # a reader must be told whatever went wrong, never left waiting
            outcome = "upstream-error"
            log.exception("blob %s: the fetch failed unexpectedly", flight.digest)
            flight.fail(FlightFailed(f"blob {flight.digest}: the fetch failed ({type(err).__name__})"))
        finally:
            self._finish(flight, outcome)

    def _fetch(self, flight: Flight) -> None:
        """Stream the blob from upstream (or its owner) into the spool, verified; the readers hear of every chunk."""
        origin = flight.origin
        if flight.expected_size is not None:  # known from the manifest: refused before upstream is even asked
            self._admit(flight, flight.expected_size)
        with self._open_blob(flight) as stream:
            stream.hold_to(self._pace)
            if flight.source is None:
                self._metrics.owned_fetches.inc()
            size = stream.size
            if size is None or (flight.expected_size is not None and size != flight.expected_size):
                raise RegistryProtocolError(
                    f"blob {flight.digest}: upstream serves {size} bytes, the manifest says {flight.expected_size}",
                    endpoint=origin.client.endpoint,
                    repository=origin.repository,
                )
            if flight.expected_size is None:  # known from upstream's answer now, before a byte is read
                self._admit(flight, size)
            path = self._spool.reserve(size)
            flight.spooling(path, size)
            with open(path, "wb", buffering=0) as spool:
                while data := stream.read(CHUNK_BYTES):  # b'' only once the digest has been checked
                    spool.write(data)
                    received = (
                        self._metrics.upstream_bytes if flight.source is None else self._metrics.peer_received_bytes
                    )
                    received.inc(len(data))
                    flight.received(len(data))
            if flight.written != size:
                raise RegistryProtocolError(f"blob {flight.digest}: {flight.written} bytes of the announced {size}")
            flight.mark_verified()

    def _finish(self, flight: Flight, outcome: str) -> None:
        """Take the flight off the table and free its spool space (readers holding the file open read on)."""
        with self._lock:
            self._flights.pop(flight.key, None)
        if flight.path is not None:
            self._spool.release(flight.path, flight.size or 0)
        self._metrics.fetches.labels(outcome).inc()


def _outcome_of(err: RegistryError) -> str:
    """The fetches metric's outcome for a registry error that ended a fetch."""
    if isinstance(err, TransferTooSlow):
        return "too-slow"
    return "invalid-content" if isinstance(err, RegistryProtocolError) else "upstream-error"
