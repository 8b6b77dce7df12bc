"""Flights in-process: a fake blob source and a recording commit, no server and no subprocess.

One open however many readers; the last byte held until the digest is checked; a mismatch cuts every
reader and commits nothing; a full spool; a fetch slot that does not come; a blob the CCR holds already;
a commit that fails after verification; the state changes a flight refuses.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.waiting import wait_until
from webhook.front.flights import Flight, FlightFailed, Flights, FlightState, Spool, SpoolFull
from webhook.front.metrics import FrontMetrics
from webhook.front.upstream import Origin
from webhook.registry.errors import RegistryProtocolError, RegistryServerError
from webhook.registry.streams import MinimumRate

DATA = bytes(range(256)) * 40  # 10,240 bytes
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
WAIT = 10.0


class FakeSource:
    """A blob download: DATA in pieces; the end (b'', the digest checked) waits for `verified`; `corrupt` fails it."""

    def __init__(self, data: bytes, piece: int, verified: threading.Event, corrupt: bool) -> None:
        self.size: int | None = len(data)
        self._pieces = [data[at : at + piece] for at in range(0, len(data), piece)]
        self._verified, self._corrupt = verified, corrupt

    def read(self, amount: int) -> bytes:
        if self._pieces:
            return self._pieces.pop(0)
        assert self._verified.wait(WAIT), "the test never let the source end"
        if self._corrupt:
            raise RegistryProtocolError(f"blob {DIGEST}: wrong digest")
        return b""

    def hold_to(self, rule: MinimumRate) -> None:
        pass

    def __enter__(self) -> FakeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FakeCCR:
    """The CCR as a flight sees it: whether it holds a blob."""

    def __init__(self, held: bool = False) -> None:
        self.held = held

    def blob_size(self, repository: str, digest: str) -> int | None:
        return len(DATA) if self.held else None


class Scene:
    """Flights over a fake source, a recording commit, a spool in a temporary directory."""

    def __init__(self, spool_dir: Path, **options: Any) -> None:
        self.opens: list[str] = []
        self.commits: list[tuple[str, bytes]] = []
        self.verified = threading.Event()  # set: the source ends (its digest checked)
        self.open_gate = threading.Event()  # set: open_blob returns (cleared: a fetch holds its slot)
        self.open_gate.set()
        self.corrupt = options.pop("corrupt", False)
        self.commit_error: Exception | None = options.pop("commit_error", None)
        self.metrics = FrontMetrics()
        settings = {"max_concurrent_fetches": 4, "fetch_deadline_seconds": 30.0, "min_bytes_per_second": 0}
        settings.update(options.pop("settings", {}))
        self.flights = Flights(
            cast(Any, FakeCCR(options.pop("held", False))),
            Spool(str(spool_dir), options.pop("spool_bytes", 1024 * 1024)),
            self.metrics,
            commit_blob=self.commit,
            open_blob=self.open,
            **settings,
        )
        self.origin = Origin("up/app", "upstream.test", cast(Any, None), "app")

    def open(self, flight: Flight) -> FakeSource:
        self.opens.append(flight.digest)
        assert self.open_gate.wait(WAIT)
        return FakeSource(DATA, 1000, self.verified, self.corrupt)

    def commit(self, flight: Flight) -> None:
        assert flight.path is not None
        if self.commit_error is not None:
            raise self.commit_error
        self.commits.append((flight.digest, flight.path.read_bytes()))

    def ended_as(self, outcome: str) -> bool:
        """Whether one fetch ended with `outcome` (counted as the flight leaves the table, just after its end)."""
        return wait_until(lambda: self.metrics.fetches.labels(outcome)._value.get() == 1, what=f"a fetch {outcome}")


class Reader(threading.Thread):
    """Follows a flight the way the front's follow does: bytes [0, size) as they become readable."""

    def __init__(self, flight: Flight) -> None:
        super().__init__(daemon=True)
        self.flight = flight
        self.received = bytearray()
        self.error: FlightFailed | None = None

    def run(self) -> None:
        try:
            self.flight.wait_started(WAIT)
            assert self.flight.path is not None and self.flight.size is not None
            with open(self.flight.path, "rb") as spool:
                for offset, count in self.flight.follow(0, self.flight.size, WAIT):
                    spool.seek(offset)
                    self.received += spool.read(count)
        except FlightFailed as err:
            self.error = err

    def finish(self) -> Reader:
        self.join(WAIT)
        assert not self.is_alive()
        return self


def at_last_byte(readers: list[Reader]) -> None:
    """Wait until every reader has all but the last byte (so each holds the spool file open before the end)."""
    wait_until(lambda: all(len(r.received) == len(DATA) - 1 for r in readers), what="readers at the last byte")


def test_many_readers_share_one_open_and_get_every_byte(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    flights = [scene.flights.ensure(scene.origin, DIGEST) for _ in range(5)]
    assert all(flight is flights[0] for flight in flights)
    readers = [Reader(flight) for flight in flights]
    for reader in readers:
        reader.start()
    at_last_byte(readers)
    scene.verified.set()
    assert all(reader.finish().received == DATA for reader in readers)
    assert scene.opens == [DIGEST]
    assert flights[0].wait_ended(WAIT) is FlightState.COMMITTED
    assert scene.commits == [(DIGEST, DATA)] and scene.ended_as("committed")


def test_the_last_byte_waits_for_the_verified_end(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    flight = scene.flights.ensure(scene.origin, DIGEST)
    reader = Reader(flight)
    reader.start()
    wait_until(lambda: len(reader.received) == len(DATA) - 1, what="every byte but the last")
    assert flight.state is FlightState.FETCHING and flight.written == len(DATA) and reader.is_alive()
    scene.verified.set()
    assert reader.finish().received == DATA and reader.error is None


def test_a_digest_mismatch_cuts_every_reader_and_commits_nothing(tmp_path: Path) -> None:
    scene = Scene(tmp_path, corrupt=True)
    flight = scene.flights.ensure(scene.origin, DIGEST)
    readers = [Reader(flight) for _ in range(3)]
    for reader in readers:
        reader.start()
    at_last_byte(readers)
    scene.verified.set()
    for reader in readers:
        assert reader.finish().error is not None and len(reader.received) < len(DATA)
    assert flight.wait_ended(WAIT) is FlightState.FAILED
    assert scene.commits == [] and scene.ended_as("invalid-content")
    assert list((tmp_path / "blobs").iterdir()) == []  # the spool space is given back


def test_a_blob_that_does_not_fit_the_spool_is_refused(tmp_path: Path) -> None:
    scene = Scene(tmp_path, spool_bytes=len(DATA) - 1)
    flight = scene.flights.ensure(scene.origin, DIGEST)
    with pytest.raises(SpoolFull):
        flight.wait_started(WAIT)
    assert flight.state is FlightState.FAILED and scene.ended_as("spool-full") and scene.commits == []


def test_a_fetch_slot_that_does_not_come_fails_the_flight(tmp_path: Path) -> None:
    scene = Scene(tmp_path, settings={"max_concurrent_fetches": 1, "fetch_deadline_seconds": 0.2})
    scene.open_gate.clear()  # the first fetch holds the only slot
    first = scene.flights.ensure(scene.origin, DIGEST)
    wait_until(lambda: scene.opens == [DIGEST], what="the first fetch opening")
    second = scene.flights.ensure(scene.origin, "sha256:" + "0" * 64)
    with pytest.raises(FlightFailed, match="no fetch slot"):
        second.wait_started(WAIT)
    assert second.state is FlightState.FAILED
    scene.open_gate.set()
    scene.verified.set()
    assert first.wait_ended(WAIT) is FlightState.COMMITTED


def test_a_blob_the_ccr_holds_is_never_fetched(tmp_path: Path) -> None:
    scene = Scene(tmp_path, held=True)
    flight = scene.flights.ensure(scene.origin, DIGEST)
    flight.wait_started(WAIT)
    assert flight.present and flight.wait_ended(WAIT) is FlightState.PRESENT
    assert scene.opens == [] and scene.commits == [] and scene.ended_as("present")
    assert scene.flights.find(scene.origin.target_repository, DIGEST) is None  # readers go to the CCR


def test_a_failed_commit_still_lets_readers_finish(tmp_path: Path) -> None:
    scene = Scene(tmp_path, commit_error=RegistryServerError("upload refused"))
    flight = scene.flights.ensure(scene.origin, DIGEST)
    reader = Reader(flight)
    reader.start()
    at_last_byte([reader])
    scene.verified.set()
    assert reader.finish().received == DATA
    assert flight.wait_ended(WAIT) is FlightState.UNCOMMITTED and scene.ended_as("commit-failed")


def test_a_flight_refuses_a_change_its_state_does_not_allow() -> None:
    flight = Flight(cast(Any, None), DIGEST, None)
    flight.mark_present()
    with pytest.raises(ValueError, match="from present to verified"):
        flight.mark_verified()
    assert flight.state is FlightState.PRESENT
    assert flight.wait_ended(0) is FlightState.PRESENT
    assert Flight(cast(Any, None), DIGEST, None).wait_ended(0.05) is None  # still fetching: the wait is bounded
