"""Committing a verified flight into the CCR, in-process: from the spool, once, and not at all behind its owner."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, cast

import pytest

from webhook.front import peers
from webhook.front.commit import SpooledBlob, commit_blob
from webhook.front.flights import CHUNK_BYTES, Flight
from webhook.front.upstream import Origin

DATA = b"layer" * (CHUNK_BYTES // 2)  # 2.5 chunks
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class RecordingCCR:
    """The CCR as a commit sees it: uploads recorded with their bytes; `holds` once the owner's commit landed."""

    def __init__(self, holds_after: int | None = None) -> None:
        self.uploads: list[tuple[str, str, int, bytes]] = []
        self.asked = 0
        self._holds_after = holds_after

    def blob_size(self, repository: str, digest: str) -> int | None:
        self.asked += 1
        return len(DATA) if self._holds_after is not None and self.asked > self._holds_after else None

    def upload_blob(self, repository: str, digest: str, size: int, body: SpooledBlob) -> None:
        self.uploads.append((repository, digest, size, b"".join(body)))


def verified_flight(tmp_path: Path, source: str | None) -> Flight:
    flight = Flight(Origin("up/app", "upstream.test", cast(Any, None), "app"), DIGEST, None)
    flight.stream_from(source)
    path = tmp_path / "spooled"
    path.write_bytes(DATA)
    flight.spooling(path, len(DATA))
    flight.received(len(DATA))
    flight.mark_verified()
    return flight


def test_the_owner_uploads_its_verified_spool_file(tmp_path: Path) -> None:
    ccr = RecordingCCR()
    commit_blob(cast(Any, ccr), verified_flight(tmp_path, source=None))
    assert ccr.uploads == [("up/app", DIGEST, len(DATA), DATA)] and ccr.asked == 0


def test_a_follower_leaves_the_upload_to_the_owner_when_its_commit_lands(tmp_path: Path) -> None:
    ccr = RecordingCCR(holds_after=2)  # the owner's commit shows on the third look
    commit_blob(cast(Any, ccr), verified_flight(tmp_path, source="10.0.0.1:5003"))
    assert ccr.uploads == [] and ccr.asked == 3


def test_a_follower_uploads_itself_when_the_owner_never_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "OWNER_COMMIT_POLL_SECONDS", 0.001)
    ccr = RecordingCCR()
    commit_blob(cast(Any, ccr), verified_flight(tmp_path, source="10.0.0.1:5003"))
    assert ccr.asked == peers.OWNER_COMMIT_POLLS and ccr.uploads == [("up/app", DIGEST, len(DATA), DATA)]


def test_a_spooled_blob_can_be_read_again(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    body = SpooledBlob(path)
    assert b"".join(body) == b"".join(body) == DATA
