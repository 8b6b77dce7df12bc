"""The benchmark's emulated WAN forwards bytes intact, counts them, and adds at least its round-trip time."""

import socket
import threading
import time

import pytest

from webhook.testing.wan import WanProxy

pytestmark = pytest.mark.integration


def echo_server():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_bytes_arrive_intact_are_counted_and_pay_the_round_trip():
    listener = echo_server()
    payload = bytes(range(256)) * 4096  # 1 MiB
    try:
        with WanProxy(listener.getsockname()[1], rtt_ms=100, mbit_per_second=400) as wan:
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", wan.port)) as conn:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
                received = b"".join(iter(lambda: conn.recv(65536), b""))
            elapsed = time.monotonic() - started
            assert received == payload
            assert wan.up.bytes_sent == wan.down.bytes_sent == len(payload)
            assert elapsed >= 0.2  # handshake round trip + one round trip for the echo
            wan.reset_counters()
            assert wan.bytes_crossed == 0
    finally:
        listener.close()
