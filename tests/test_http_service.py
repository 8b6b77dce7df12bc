"""The bounded server of every port (the warmer's hint and metrics ports, the front's) against clients that mean
harm: silent and trickling connections, floods of them from one address, a full server, and Content-Length
headers that lie. Real sockets on 127.0.0.1 (the flood on 127.0.0.2)."""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from tests.support.waiting import deadline_ceiling, wait_until
from webhook import tls
from webhook.http_service import BoundedServer, HTTPService, Reply
from webhook.testing.slow_clients import SlowClients
from webhook.tls import reloading_ssl_context

pytestmark = pytest.mark.integration
MAX_BODY = 4096
FLOODER = "127.0.0.2"  # another address of this host: the flood's; the clients served beside it use 127.0.0.1


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


def test_silent_and_trickling_connections_hold_no_thread_and_are_cut_at_the_head_deadline():
    """A client whose head never ends is cut at the head deadline however often it sends a byte, and while a
    flood of them is open (and reopened) the one worker thread still answers a client from another address."""
    routes = {("GET", "/healthz"): lambda request: Reply(200, b"ok\n")}
    service = HTTPService("127.0.0.1:0", routes, max_connections=1, per_address=1000, head_seconds=1.0).start()
    threads = threading.active_count()
    flood = SlowClients("127.0.0.1", service.port, 0, 0, idle=40, heads=40, source=FLOODER, interval=0.2)
    try:
        with flood:
            assert flood.open_connections == 80
            for _ in range(3):  # more than the worker threads there are
                answer = exchange(service, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n")
            assert threading.active_count() <= threads + 2  # the one worker, and the flood's own thread
            wait_until(lambda: len(flood.lifetimes) >= 80, what="every flood connection cut once")
    finally:
        service.stop()
    first = sorted(flood.lifetimes)[:80]
    assert first[0] >= 0.9 and first[-1] <= deadline_ceiling(1.0), first  # the deadline, not per byte, not never


def test_an_address_over_its_cap_is_closed_at_once_while_others_are_served():
    routes = {("GET", "/healthz"): lambda request: Reply(200, b"ok\n")}
    service = HTTPService("127.0.0.1:0", routes, per_address=3, head_seconds=5.0).start()
    held = [socket.create_connection(("127.0.0.1", service.port), 5, (FLOODER, 0)) for _ in range(3)]
    try:
        wait_until(lambda: service.open_connections == 3, what="the three connections counted")
        with socket.create_connection(("127.0.0.1", service.port), 5, (FLOODER, 0)) as refused:
            assert _closed(refused)
        for connection in held:  # the first three stay open: only the fourth was refused
            connection.settimeout(0.2)
            with pytest.raises(TimeoutError):
                connection.recv(1)
        answer = exchange(service, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        for connection in held:
            connection.close()
        service.stop()


def test_when_the_server_is_full_the_oldest_connection_still_arriving_makes_room():
    silent: list[socket.socket] = []
    with (
        running(BoundedServer("127.0.0.1:0", Answering, max_open=3, head_seconds=10.0)) as server,
        ExitStack() as opened,
    ):
        for _ in range(3):  # the server is full of connections that send nothing
            silent.append(opened.enter_context(socket.create_connection(("127.0.0.1", server.port), 5, (FLOODER, 0))))
            wait_until(lambda: server.open_connections == len(silent), what="the silent connection counted")
        with socket.create_connection(("127.0.0.1", server.port), 5) as newcomer:
            newcomer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(newcomer).startswith(b"HTTP/1.1 200")
        assert _closed(silent[0])  # the oldest made room, long before its head deadline
        silent[1].settimeout(0.2)
        with pytest.raises(TimeoutError):
            silent[1].recv(1)


def test_when_every_worker_is_busy_a_request_gets_503_and_probes_are_answered_by_the_loop():
    release = threading.Event()
    routes = {
        ("GET", "/hold"): lambda request: Reply(200, b"held\n") if release.wait(10) else Reply(500, b""),
        ("GET", "/healthz"): lambda request: Reply(200, b"ok\n"),
        ("GET", "/other"): lambda request: Reply(200, b"other\n"),
    }
    service = HTTPService("127.0.0.1:0", routes, max_connections=1, probes=("/healthz",)).start()
    holder = threading.Thread(target=exchange, args=(service, b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"))
    try:
        holder.start()
        wait_until(lambda: service.busy == 1, what="the one worker busy")
        busy = exchange(service, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        assert busy.startswith(b"HTTP/1.1 503") and b"Retry-After: 1\r\n" in busy and b"Connection: close" in busy
        probe = exchange(service, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert probe.startswith(b"HTTP/1.1 200") and probe.endswith(b"ok\n")
    finally:
        release.set()
        holder.join(10)
        service.stop()


def test_a_kept_alive_connection_waits_without_its_thread_and_serves_its_next_request():
    routes = {("GET", "/n"): lambda request: Reply(200, request.query.get("n", "").encode())}
    service = HTTPService("127.0.0.1:0", routes, max_connections=1).start()
    try:
        with connect(service) as kept:
            kept.sendall(b"GET /n?n=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(kept).endswith(b"\r\n\r\n1")
            other = exchange(service, b"GET /n?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert other.startswith(b"HTTP/1.1 200") and other.endswith(b"2")  # the one worker was free
            kept.sendall(b"GET /n?n=3 HTTP/1.1\r\nHost: x\r\n\r\nGET /n?n=4 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(kept).endswith(b"3") and _answer(kept).endswith(b"4")  # pipelined: both, in order
    finally:
        service.stop()


def test_a_kept_alive_connection_is_closed_when_idle_and_its_next_head_has_the_head_deadline():
    with (
        running(BoundedServer("127.0.0.1:0", Answering, head_seconds=1.0, idle_seconds=6.0)) as server,
        socket.create_connection(("127.0.0.1", server.port), 5) as idle,
        socket.create_connection(("127.0.0.1", server.port), 5) as trickling,
    ):
        for connection in (idle, trickling):
            connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(connection).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        time.sleep(0.3)
        first_byte = time.monotonic()
        trickling.settimeout(0.2)
        for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 100:  # a byte every 0.2 s, never the end
            try:
                trickling.send(bytes([byte]))
                if trickling.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:  # reset: closed just after a byte went out
                break
        cut = time.monotonic() - first_byte
        assert 0.9 <= cut <= deadline_ceiling(1.0) and time.monotonic() - answered < 6.0, cut
        assert _closed(idle, within=deadline_ceiling(6.0))  # kept alive with no next request: closed when idle
        assert time.monotonic() - answered >= 5.9


def test_the_busy_answer_on_a_tls_port_is_tls(tmp_path):
    ca = tls.generate_ca("test CA")
    tls.issue_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(tmp_path / "tls.crt", tmp_path / "tls.key")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    release = threading.Event()

    class Holding(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    serving = running(
        BoundedServer(
            "127.0.0.1:0", Holding, tls=reloading_ssl_context(tmp_path / "tls.crt", tmp_path / "tls.key"), threads=1
        )
    )
    with serving as server:
        try:
            holder = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=10)
            holder.request("GET", "/")  # takes the one worker
            wait_until(lambda: server.busy == 1, what="the one worker busy")
            turned_away = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=10)
            turned_away.request("GET", "/")
            answer = turned_away.getresponse()
            assert answer.status == 503 and answer.getheader("Retry-After") == "1"
            release.set()
            assert holder.getresponse().status == 200
        finally:
            release.set()


class Answering(BaseHTTPRequestHandler):
    """200 with an empty body."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def running(server: BoundedServer) -> Iterator[BoundedServer]:
    """`server` serving from a thread of its own until the block ends."""
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        loop.join(10)


def _closed(connection: socket.socket, within: float = 2.0) -> bool:
    """Whether the server closed `connection` (within `within` seconds) without a byte."""
    connection.settimeout(within)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True


def _answer(connection: socket.socket) -> bytes:
    """One answer with a Content-Length from a kept-alive connection."""
    connection.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(1)
    length = int(re.search(rb"Content-Length: ([0-9]+)", data).group(1))  # type: ignore[union-attr]
    while len(data) < data.index(b"\r\n\r\n") + 4 + length:
        data += connection.recv(1)
    return data


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
