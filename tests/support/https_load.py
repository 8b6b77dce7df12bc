"""Load on a real HTTPS server for the fault tests: client threads each sending one request after another, every
one on a fresh TLS connection, recording when it started and ended, how it ended and which certificate served it.

A fresh connection per request means a request fails only if the server dropped it: no kept-alive connection
left over from a dead worker muddies the count (the API server's Go client drops idle connections the server
closed on its own). Every loop is bounded by `limit` requests per thread, and stops when the block ends.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from cryptography import x509


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: when it started and ended (monotonic), its HTTP status or transport error, the serving cert."""

    started: float
    ended: float
    status: int | None
    error: str | None
    serial: int | None
    body: bytes

    @property
    def ok(self) -> bool:
        """Answered 200."""
        return self.status == 200


class HTTPSLoad:
    """`threads` clients POSTing `body` to `path` on 127.0.0.1:`port`, trusting `context`, until the block ends."""

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        path: str,
        body: bytes,
        threads: int = 4,
        limit: int = 2000,
        timeout: float = 10.0,
    ) -> None:
        self.port, self.context, self.path, self.body = port, context, path, body
        self.limit, self.timeout = limit, timeout
        self.outcomes: list[list[Outcome]] = [[] for _ in range(threads)]
        self._progress = threading.Condition()
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(index,), daemon=True) for index in range(threads)]

    def _request(self) -> Outcome:
        started = time.monotonic()
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=self.timeout)
        try:
            connection.request("POST", self.path, body=self.body, headers={"Content-Type": "application/json"})
            reply = connection.getresponse()
            body = reply.read()
            der = connection.sock.getpeercert(binary_form=True) if connection.sock else None
            serial = x509.load_der_x509_certificate(der).serial_number if der else None
            return Outcome(started, time.monotonic(), reply.status, None, serial, body)
        except (OSError, http.client.HTTPException) as err:
            return Outcome(started, time.monotonic(), None, repr(err), None, b"")
        finally:
            connection.close()

    def _run(self, index: int) -> None:
        for _ in range(self.limit):
            if self._done.is_set():
                return
            outcome = self._request()
            with self._progress:
                self.outcomes[index].append(outcome)
                self._progress.notify_all()

    def all(self) -> list[Outcome]:
        """Every outcome so far, in no particular order."""
        with self._progress:
            return [outcome for outcomes in self.outcomes for outcome in outcomes]

    def wait_until(self, condition: Callable[[list[list[Outcome]]], bool], timeout: float = 60.0) -> bool:
        """Whether `condition(outcomes per thread)` came true within `timeout` s (False once every thread ended)."""
        with self._progress:
            return self._progress.wait_for(
                lambda: condition(self.outcomes) or not any(thread.is_alive() for thread in self._threads), timeout
            ) and condition(self.outcomes)

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
