"""front/held.py without servers: which file a repository's blob is, which answers the file may serve, the copy."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import cast

import pytest
import urllib3

from webhook.front.held import HeldBlobs, body_span, send_file

DIGEST = "sha256:" + "ab" * 32


def layout(root: Path, repository: str, digest: str = DIGEST, link: str | None = None) -> Path:
    """The filesystem driver's files for one linked blob under `root`; the data file's path."""
    v2 = root / "docker/registry/v2"
    hex_digest = digest[7:]
    (v2 / "repositories" / repository / "_layers/sha256" / hex_digest).mkdir(parents=True)
    (v2 / "repositories" / repository / "_layers/sha256" / hex_digest / "link").write_text(link or digest)
    data = v2 / "blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"x" * 10)
    return data


def test_the_data_file_of_a_blob_the_repository_links(tmp_path: Path) -> None:
    data = layout(tmp_path, "team/app")
    held = HeldBlobs(str(tmp_path), ())
    assert held.data_path("team/app", DIGEST) == data
    assert held.data_path("team/other", DIGEST) is None
    assert held.data_path("team/app", "sha256:" + "cd" * 32) is None


def test_a_link_naming_another_digest_is_no_link(tmp_path: Path) -> None:
    layout(tmp_path, "team/app", link="sha256:" + "cd" * 32)
    assert HeldBlobs(str(tmp_path), ()).data_path("team/app", DIGEST) is None


@pytest.mark.parametrize(
    ("repository", "digest"),
    [
        ("team/../team/app", DIGEST),
        ("/team/app", DIGEST),
        ("team//app", DIGEST),
        ("Team/app", DIGEST),
        ("team/app", "sha512:" + "ab" * 64),
        ("team/app", "sha256:../../" + "ab" * 29),
    ],
)
def test_names_outside_the_grammar_never_become_paths(tmp_path: Path, repository: str, digest: str) -> None:
    layout(tmp_path, "team/app")
    assert HeldBlobs(str(tmp_path), ()).data_path(repository, digest) is None


class Answer:
    """A HEAD answer as urllib3 gives it: a status and headers."""

    def __init__(self, status: int, **headers: str) -> None:
        self.status = status
        self.headers = {name.replace("_", "-"): value for name, value in headers.items()}


def span(status: int, size: int = 100, **headers: str) -> tuple[int, int] | None:
    return body_span(cast(urllib3.BaseHTTPResponse, Answer(status, **headers)), DIGEST, size)


def test_the_file_serves_only_the_answer_it_matches() -> None:
    digest = {"Docker_Content_Digest": DIGEST}
    assert span(200, Content_Length="100", **digest) == (0, 100)
    assert span(206, Content_Length="10", Content_Range="bytes 5-14/100", **digest) == (5, 10)
    assert span(200, Content_Length="99", **digest) is None, "another size than the file"
    assert span(200, Content_Length="100", Docker_Content_Digest="sha256:" + "cd" * 32) is None
    assert span(200, Content_Length="100") is None, "no digest said"
    assert span(206, Content_Length="10", Content_Range="bytes 5-14/101", **digest) is None
    assert span(206, Content_Length="11", Content_Range="bytes 5-14/100", **digest) is None
    assert span(206, Content_Length="10", Content_Range="bytes 95-104/100", **digest) is None
    assert span(304, Content_Length="100", **digest) is None
    assert span(401, Content_Length="100", **digest) is None


def test_send_file_sends_exactly_the_span(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(bytes(range(256)) * 40_000)  # ~10 MB, more than one socket buffer
    left, right = socket.socketpair()
    received = bytearray()

    def drain() -> None:
        while chunk := right.recv(1 << 20):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with left, open(source, "rb") as file:
        send_file(left, file, 1000, 5_000_000)
    reader.join(30)
    right.close()
    assert bytes(received) == source.read_bytes()[1000:5_001_000]


def test_send_file_says_when_the_file_is_short(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 100)
    left, right = socket.socketpair()
    with left, right, open(source, "rb") as file, pytest.raises(OSError):
        send_file(left, file, 50, 100)
