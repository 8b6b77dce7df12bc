"""Held blobs sent from the storage the front shares with its registry, at the registry's own speed.

The CCR registry still decides every request: the front asks it the node's request as a HEAD (with the
node's Authorization, Range and conditionals), so access control, repository scoping and the answer's
headers are the registry's own. Only the body comes from the registry's files (the filesystem driver's
layout under `front.registryStorageDir`), sent with sendfile(2) over plain sockets and in large pieces
over TLS, instead of through the registry and the front's relay. Whenever the files cannot be trusted
to be that answer (no such file, no link in the repository, another size) the caller streams it from
the registry as before. Measured in bench/front_throughput.py; why, in docs/decisions/0007-held-blobs.md.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

import urllib3

from webhook.registry.streams import release

COPY_BYTES = 256 * 1024  # where sendfile cannot be used (TLS): one read, then one write; 512 connections: 128 MiB
# A repository name as distribution writes it to disk (its grammar): never `..`, never an absolute path.
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_DIGEST = re.compile(r"^sha256:(?P<hex>[0-9a-f]{64})$")
_CONTENT_RANGE = re.compile(r"^bytes (?P<first>[0-9]+)-(?P<last>[0-9]+)/(?P<size>[0-9]+)$")


class HeldAnswer(Protocol):
    """What the front's request handler offers this module: the ways to answer its request."""

    def send_head(self, status: int, headers: dict[str, str]) -> None: ...

    def send_file(self, file: BinaryIO, offset: int, count: int, source: str) -> None: ...

    def cut(self) -> None: ...


def send_file(destination: socket.socket, file: BinaryIO, offset: int, count: int) -> None:
    """`count` bytes of `file` from `offset` to `destination`: sendfile(2) on a plain socket, else large pieces.

    OSError if the peer goes away or the file is shorter than promised."""
    if not isinstance(destination, ssl.SSLSocket):  # SSLSocket.sendfile would copy 8 KiB at a time
        sent = destination.sendfile(file, offset, count)
        if sent != count:
            raise OSError(f"sent {sent} of {count} bytes")
        return
    buffer = memoryview(bytearray(min(count, COPY_BYTES)))
    position, end = offset, offset + count
    while position < end:
        read = os.preadv(file.fileno(), [buffer[: min(len(buffer), end - position)]], position)
        if read == 0:
            raise OSError(f"the file ended {end - position} bytes short")
        destination.sendall(buffer[:read])
        position += read


class HeldBlobs:
    """The CCR registry's filesystem storage, as mounted in the front: where a repository's blob is on disk."""

    def __init__(self, storage_dir: str, relayed: Iterable[str]) -> None:
        self.root = Path(storage_dir) / "docker" / "registry" / "v2"
        self._relayed = tuple(relayed)  # the answer headers the front passes on from the registry

    def data_path(self, repository: str, digest: str) -> Path | None:
        """The blob's data file when `repository` links `digest` (distribution's layout), else None."""
        found = _DIGEST.match(digest)
        if found is None or _REPOSITORY.match(repository) is None:
            return None
        hex_digest = found.group("hex")
        link = self.root / "repositories" / repository / "_layers" / "sha256" / hex_digest / "link"
        try:
            if link.read_bytes().strip() != digest.encode():
                return None
        except OSError:
            return None
        return self.root / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"

    def serve(
        self, request: HeldAnswer, repository: str, digest: str, ask_head: Callable[[], urllib3.BaseHTTPResponse]
    ) -> bool:
        """Answer a GET of a held blob from its file, as the registry would; False (nothing sent) to stream it instead.

        `ask_head` asks the CCR registry the node's request as a HEAD: its answer decides, the file only serves."""
        path = self.data_path(repository, digest)
        if path is None:
            return False
        try:
            file = open(path, "rb")  # noqa: SIM115 - held open across the answer, closed below
        except OSError:
            return False
        with file:
            try:
                response = ask_head()
            except (urllib3.exceptions.HTTPError, OSError):
                return False  # the pass-through asks again, and answers for the registry if it is down
            try:
                response.read()  # none, as for any HEAD: it marks the connection free for the next request
                span = body_span(response, digest, os.fstat(file.fileno()).st_size)
                answer = {name: response.headers[name] for name in self._relayed if name in response.headers}
            finally:
                release(response, True)
            if response.status == 416:  # distribution's 416 announces the blob's length with a short body: none
                request.send_head(416, {**answer, "Content-Length": "0"})
                return True
            if span is None:
                return False
            request.send_head(response.status, answer)
            try:
                request.send_file(file, span[0], span[1], "held")
            except OSError:  # the node went away
                request.cut()
        return True


def body_span(response: urllib3.BaseHTTPResponse, digest: str, file_size: int) -> tuple[int, int] | None:
    """(offset, count) of the file the registry's HEAD answer promises as the GET's body; None unless it is sure."""
    headers = response.headers
    length = headers.get("Content-Length", "")
    if headers.get("Docker-Content-Digest") != digest or not length.isdigit():
        return None
    if response.status == 200 and int(length) == file_size:
        return 0, file_size
    found = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
    if response.status != 206 or found is None or int(found.group("size")) != file_size:
        return None
    first, last = int(found.group("first")), int(found.group("last"))
    if last >= file_size or last - first + 1 != int(length):
        return None
    return first, int(length)
