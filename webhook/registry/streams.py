"""Blob bytes in motion for the registry client: the verified download stream and the checked upload body.

Neither holds a blob in memory: a download is read chunk by chunk and hashed as it goes, an upload is
passed through from its source chunk by chunk, and cut into PATCH-sized parts without copying it whole.
A download held to a `MinimumRate` fails once it trickles (a few bytes a second never trip a read
timeout), so it frees whoever waits on it; the copy engine and anything else that streams blobs use it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import urllib3
from urllib3.response import BaseHTTPResponse

from webhook.registry.deadline import WATCHDOG
from webhook.registry.errors import RegistryProtocolError, RegistryUnavailable, describe_transport_error


def release(response: BaseHTTPResponse, complete: bool) -> None:
    """Give the connection back to the pool, its deadline disarmed; one with unread data is closed, not reused."""
    WATCHDOG.disarm(response.connection)
    if not complete:
        response.close()
    response.release_conn()


class TransferTooSlow(RegistryUnavailable):
    """A transfer broke its MinimumRate: too few bytes in a window, or not finished by its deadline."""


@dataclass(frozen=True, slots=True)
class MinimumRate:
    """The pace a blob transfer must keep: `window_bytes` in every `window_seconds`, done within `deadline_seconds`.

    `setting` names where the rule comes from (a configuration key), for the error a broken rule raises.
    """

    window_bytes: int
    window_seconds: float
    deadline_seconds: float
    setting: str = "the minimum rate"

    def watch(self, what: str, clock: Callable[[], float] = time.monotonic) -> RateWatch:
        """A watch over one transfer (`what`, for messages), starting now."""
        return RateWatch(self, what, clock)


class RateWatch:
    """One transfer held to a MinimumRate: `received(count)` after every read raises TransferTooSlow once it breaks."""

    def __init__(self, rule: MinimumRate, what: str, clock: Callable[[], float]) -> None:
        self._rule, self._what, self._clock = rule, what, clock
        self._started = self._window_started = clock()
        self._in_window = 0

    def received(self, count: int) -> None:
        """`count` more bytes arrived (0: a read that brought none); raise if the rule is broken by now."""
        rule, now = self._rule, self._clock()
        self._in_window += count
        if now - self._started > rule.deadline_seconds:
            raise TransferTooSlow(f"{self._what}: not finished within {rule.deadline_seconds:g} s ({rule.setting})")
        if now - self._window_started < rule.window_seconds:
            return
        if self._in_window < rule.window_bytes:
            raise TransferTooSlow(
                f"{self._what}: {self._in_window} bytes in {now - self._window_started:.1f} s, below the minimum "
                f"rate of {rule.window_bytes} bytes per {rule.window_seconds:g} s ({rule.setting})"
            )
        self._window_started, self._in_window = now, 0


class BlobStream:
    """A blob download in progress, read in pieces; the digest is checked at the end. Close it when done."""

    CHUNK_BYTES = 1024 * 1024

    def __init__(self, response: BaseHTTPResponse, digest: str, *, endpoint: str, repository: str) -> None:
        self._response = response
        self.digest = digest
        length = response.headers.get("Content-Length")
        self.size: int | None = int(length) if length and length.isdigit() else None
        self._hash = hashlib.new(digest.split(":", 1)[0])
        self._received = 0
        self._where = {"endpoint": endpoint, "repository": repository}
        self._done = False
        self._pace: RateWatch | None = None

    def hold_to(self, rule: MinimumRate) -> None:
        """Hold the rest of this download to `rule`: read() raises TransferTooSlow once it is broken."""
        self._pace = rule.watch(f"blob {self.digest}")

    def read(self, amount: int = CHUNK_BYTES) -> bytes:
        """Up to `amount` bytes; b'' at the end, once the digest has been checked."""
        if self._done:
            return b""
        try:
            data = self._read_up_to(amount)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            self.close()
            raise RegistryUnavailable(
                f"blob {self.digest}: download broke after {self._received} bytes: {describe_transport_error(err)}",
                **self._where,
            ) from None
        except TransferTooSlow as err:
            self.close()
            raise TransferTooSlow(err.detail, **self._where) from None
        if data:
            self._hash.update(data)
            self._received += len(data)
            return data
        self._done = True
        release(self._response, complete=True)
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if actual != self.digest:
            raise RegistryProtocolError(f"blob {self.digest}: the served bytes have digest {actual}", **self._where)
        return b""

    def _read_up_to(self, amount: int) -> bytes:
        """`amount` bytes or what is left, gathered from the reads the network gives, each one checked by the pace."""
        parts: list[bytes] = []
        gathered = 0
        while gathered < amount:
            part = self._response.read1(amount - gathered, decode_content=False)
            if self._pace is not None:
                self._pace.received(len(part))
            if not part:
                break
            parts.append(part)
            gathered += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data = self.read()
        if not data:
            raise StopIteration
        return data

    def close(self) -> None:
        """Stop reading; a connection with unread data is closed rather than reused."""
        if not self._done:
            self._done = True
            release(self._response, complete=False)

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UploadBody:
    """Upload data: `chunks` passed through, checked to add up to `size`, keeping the source's own error.

    urllib3 reports an exception raised while it sends a body as a broken connection; `error` lets the
    upload raise what really went wrong (a source that failed, a length that does not match).
    """

    def __init__(self, chunks: Iterable[bytes], size: int, digest: str) -> None:
        self._chunks, self._size, self._digest = chunks, size, digest
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        source = iter(self._chunks)
        while True:
            try:
                chunk = next(source)
            except StopIteration:
                break
            except Exception as err:
                self.error = err
                raise
            sent += len(chunk)
            if sent > self._size:
                self.error = ValueError(f"blob {self._digest}: the data is longer than the declared {self._size} bytes")
                raise self.error
            yield chunk
        if sent != self._size:
            self.error = ValueError(
                f"blob {self._digest}: the data ended after {sent} of the declared {self._size} bytes"
            )
            raise self.error


class UploadPart:
    """The next `length` bytes of a chunk iterator, yielded without copying the whole; keeps what is left over."""

    def __init__(self, source: Iterator[bytes], leftover: bytes, length: int) -> None:
        self._source, self.leftover, self._length = source, leftover, length

    def __iter__(self) -> Iterator[bytes]:
        remaining = self._length
        while remaining > 0:
            chunk = self.leftover or next(self._source, None)
            if chunk is None:
                return
            self.leftover = chunk[remaining:]
            piece = chunk[:remaining]
            remaining -= len(piece)
            yield piece
