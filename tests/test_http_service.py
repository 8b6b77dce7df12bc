"""The warmer's small HTTP server (hint, metrics and health ports) against clients that mean harm: silent
connections, floods of them, and Content-Length headers that lie. Real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.waiting import wait_until
from webhook.http_service import HTTPService, Reply

pytestmark = pytest.mark.integration
MAX_BODY = 4096


@pytest.fixture
def service() -> Iterator[HTTPService]:
    running = HTTPService(
        "127.0.0.1:0",
        {("GET", "/healthz"): lambda request: Reply(200, b"ok\n"), ("POST", "/echo"): lambda r: Reply(200, r.body)},
        max_body=MAX_BODY,
        timeout=2.0,
        max_connections=4,
    ).start()
    yield running
    running.stop()


def connect(service: HTTPService) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=10)


def exchange(service: HTTPService, request: bytes) -> bytes:
    """Send `request` and read the answer until the server closes the connection (or 10 s pass: a test failure)."""
    with connect(service) as connection:
        connection.sendall(request)
        answer = b""
        while data := connection.recv(65536):
            answer += data
            if b"\r\n\r\n" in answer and b"Connection: close" not in answer:
                break
        return answer


def test_a_silent_client_is_dropped_and_a_flood_of_them_holds_a_bounded_number_of_threads(service):
    threads_before = threading.active_count()
    silent = [connect(service) for _ in range(4)]  # every slot taken, nothing sent
    wait_until(lambda: threading.active_count() >= threads_before + 4, what="the silent connections served")
    flood = [connect(service) for _ in range(40)]
    try:
        for connection in flood:  # turned away at once, with no thread of their own
            assert connection.recv(4096).startswith(b"HTTP/1.1 503")
        assert threading.active_count() <= threads_before + 4
        for connection in silent:  # dropped by the server after its 2 s timeout (the client would wait 10 s)
            assert connection.recv(4096) == b""
        answer = exchange(service, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n")
    finally:
        for connection in silent + flood:
            connection.close()


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (b"Content-Length: -5", b"400"),
        (b"Content-Length: many", b"400"),
        (b"Content-Length: 1e3", b"400"),
        (b"Content-Length: 99999999999999999999999", b"400"),
        (b"Content-Length: 10\r\nContent-Length: 20", b"400"),
        (b"Transfer-Encoding: chunked", b"400"),
        (f"Content-Length: {MAX_BODY + 1}".encode(), b"413"),
    ],
    ids=["negative", "not a number", "exponent", "huge", "two lengths", "chunked", "over the cap"],
)
def test_a_lying_content_length_is_refused_before_the_body_is_read(service, header, status):
    answer = exchange(service, b"POST /echo HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")  # and no body at all
    assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in answer, answer


def test_a_body_within_the_cap_is_served():
    with_body = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    service = HTTPService("127.0.0.1:0", {("POST", "/echo"): lambda r: Reply(200, r.body)}).start()
    try:
        answer = exchange(service, with_body)
    finally:
        service.stop()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
