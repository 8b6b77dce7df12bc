"""The storage budget at the front, in-process: a cold blob that cannot fit is refused before a byte is spooled.

The flights run over the fake source of test_front_flights; the budget is the front's FetchBudget over a
stand-in for retention's StoredBytes (the real one is read from a real registry in
test_front_budget_integration). What is checked: the refusal comes before upstream is asked when the
manifest gave the size, before the spool when only upstream's answer did; every reader gets it; the metric,
the JSON log line and the answer (507 DENIED) say it; a blob that fits is fetched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest

from tests.test_front_flights import DATA, DIGEST, WAIT, Scene
from webhook.front.answers import answer_for
from webhook.front.budget import FetchBudget
from webhook.front.flights import FlightState, OverBudget
from webhook.registry.errors import RegistryUnavailable


class Stored:
    """What the CCR holds, as retention's StoredBytes tells it: `current()` (or its error), `add()` counted."""

    def __init__(self, stored: int, error: Exception | None = None) -> None:
        self.stored, self.error = stored, error

    def current(self) -> int:
        if self.error is not None:
            raise self.error
        return self.stored

    def add(self, written: int) -> None:
        self.stored += written


def budgeted(tmp_path: Path, stored: Stored, max_bytes: int) -> tuple[Scene, FetchBudget]:
    budget = FetchBudget(cast(Any, stored), max_bytes)

    def admit(flight: Any, size: int) -> None:
        budget.admit(flight, size)

    return Scene(tmp_path, settings={"admit": admit}), budget


def test_a_blob_sized_by_its_manifest_is_refused_before_upstream_is_asked(tmp_path: Path, caplog) -> None:
    scene, _ = budgeted(tmp_path, Stored(5000), max_bytes=5000 + len(DATA) - 1)
    with caplog.at_level(logging.WARNING, logger="webhook.front"):
        flight = scene.flights.ensure(scene.origin, DIGEST, expected_size=len(DATA))
        for _ in range(2):  # every reader, the first and a late one, hears why
            with pytest.raises(OverBudget, match=r"holds 4\.9 KiB of its 14\.9 KiB budget \(retention\.maxBytes\)"):
                flight.wait_started(WAIT)
        assert scene.ended_as("over-budget")
    assert flight.state is FlightState.FAILED and scene.opens == [] and scene.commits == []
    assert list((tmp_path / "blobs").iterdir()) == []
    (line,) = [record for record in caplog.records if hasattr(record, "fields")]  # one line, with the numbers
    assert DIGEST in line.getMessage() and "does not fit" in line.getMessage()
    assert cast(Any, line).fields == {
        "outcome": "over-budget",
        "repository": "up/app",
        "blob": DIGEST,
        "size": len(DATA),
        "stored_bytes": 5000,
        "max_bytes": 5000 + len(DATA) - 1,
    }
    answer = answer_for(flight.error or AssertionError("no error"))
    assert answer is not None and (answer.status, answer.code, answer.retry_after) == (507, "DENIED", None)


def test_a_blob_sized_only_by_upstream_is_refused_before_the_spool(tmp_path: Path) -> None:
    scene, _ = budgeted(tmp_path, Stored(0), max_bytes=len(DATA) - 1)
    flight = scene.flights.ensure(scene.origin, DIGEST)  # a node's GET: no manifest told the size
    with pytest.raises(OverBudget):
        flight.wait_started(WAIT)
    assert scene.opens == [DIGEST]  # upstream's answer gave the size...
    assert flight.size is None and flight.written == 0  # ...and not one byte went to the spool
    assert scene.ended_as("over-budget") and scene.commits == []


def test_a_blob_that_fits_exactly_is_fetched(tmp_path: Path) -> None:
    scene, _ = budgeted(tmp_path, Stored(1000), max_bytes=1000 + len(DATA))  # full to the byte after it
    flight = scene.flights.ensure(scene.origin, DIGEST, expected_size=len(DATA))
    scene.verified.set()
    assert flight.wait_ended(WAIT) is FlightState.COMMITTED and scene.commits == [(DIGEST, DATA)]
    assert scene.ended_as("committed")


def test_a_ccr_that_cannot_be_measured_does_not_stop_a_fetch(tmp_path: Path, caplog) -> None:
    scene, _ = budgeted(tmp_path, Stored(0, RegistryUnavailable("catalog: connection refused")), max_bytes=1)
    with caplog.at_level(logging.WARNING, logger="webhook.front"):
        flight = scene.flights.ensure(scene.origin, DIGEST, expected_size=len(DATA))
        scene.verified.set()
        assert flight.wait_ended(WAIT) is FlightState.COMMITTED
    assert "fetched without the budget check" in caplog.text
