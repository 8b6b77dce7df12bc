"""Passing a CCR answer's body to a client in the kernel (splice), over socket pairs: nothing listens."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest
import urllib3

from webhook.front.splice import relay, source_socket

BODY = os.urandom(3 * 1024 * 1024 + 5)  # more than one pipe's worth, and not a multiple of it


@pytest.fixture
def pairs() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    source_writer, source_reader = socket.socketpair()
    destination, client = socket.socketpair()
    for end in (source_writer, source_reader, destination, client):
        end.settimeout(30)
    yield source_writer, source_reader, destination, client
    for end in (source_writer, source_reader, destination, client):
        end.close()


def answer_over(reader: socket.socket) -> urllib3.HTTPResponse:
    """urllib3's response over `reader`, its head parsed (and some of its body buffered, as in the front)."""
    parsed = http.client.HTTPResponse(reader)
    parsed.begin()
    connection = cast(Any, type("Connection", (), {"sock": reader})())
    return urllib3.HTTPResponse(
        body=parsed,
        headers=dict(parsed.getheaders()),
        status=parsed.status,
        preload_content=False,
        original_response=parsed,
        connection=connection,
    )


def test_the_body_moves_whole_and_every_byte_is_counted(pairs: Any) -> None:
    source_writer, source_reader, destination, client = pairs
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    threading.Thread(target=source_writer.sendall, args=(head + BODY,), daemon=True).start()
    response = answer_over(source_reader)
    received = bytearray()

    def read() -> None:
        while len(received) < len(BODY) and (chunk := client.recv(1 << 20)):
            received.extend(chunk)

    reading = threading.Thread(target=read, daemon=True)
    reading.start()
    counted: list[int] = []
    assert relay(response, destination, len(BODY), counted.append)
    reading.join(30)
    assert bytes(received) == BODY and sum(counted) == len(BODY)


def test_a_source_that_closes_early_is_an_error_not_a_short_success(pairs: Any) -> None:
    source_writer, source_reader, destination, _ = pairs
    source_writer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY[:1000])
    source_writer.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError, match="closed the connection"):
        relay(answer_over(source_reader), destination, len(BODY), lambda count: None)


def test_tls_or_a_response_without_a_plain_socket_is_declined(pairs: Any) -> None:
    _, _, destination, _ = pairs
    not_http = urllib3.HTTPResponse(body=b"x", preload_content=False)
    assert source_socket(not_http) is None
    assert not relay(not_http, destination, 1, lambda count: None)
    tls_socket = cast(Any, ssl.SSLSocket.__new__(ssl.SSLSocket))  # never connected: only its type matters
    source_writer, source_reader, _, _ = pairs
    source_writer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert not relay(answer_over(source_reader), tls_socket, 1, lambda count: None)
