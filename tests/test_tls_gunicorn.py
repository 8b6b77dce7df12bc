"""A real gunicorn over TLS (and a server that wraps its socket once) picks up a renewed certificate under load
without failing a request, and a worker whose first connection comes mid-renewal serves the last good pair."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.certificates import HOST, NAMES, POLICY, serial
from tests.support.waiting import wait_until
from webhook import tls
from webhook.testing.processes import free_port, stop, wait_for_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


class Clients:
    """Threads that each open a fresh TLS connection per request and record the certificate served."""

    def __init__(self, port: int, ca_file: Path, count: int = 4, limit: int = 400) -> None:
        self.port, self.limit = port, limit
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.seen: list[list[int]] = [[] for _ in range(count)]
        self.failures: list[str] = []
        self.progress = threading.Condition()
        self.done = threading.Event()
        # half the clients send SNI (as the API server does), half connect by address (no SNI)
        self.threads = [
            threading.Thread(target=self._run, args=(i, HOST if i % 2 else "127.0.0.1"), daemon=True)
            for i in range(count)
        ]

    def _request(self, server_hostname: str) -> int:
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
            self.context.wrap_socket(raw, server_hostname=server_hostname) as conn,
        ):
            served = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True)).serial_number
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := conn.recv(65536):
                response += chunk
            if not response.startswith(b"HTTP/1.1 200") or not response.endswith(b"ok"):
                raise AssertionError(f"unexpected response {response[:80]!r}")
            return served

    def _run(self, index: int, server_hostname: str) -> None:
        for _ in range(self.limit):
            if self.done.is_set():
                return
            try:
                got = self._request(server_hostname)
            except Exception as err:
                self.failures.append(f"{server_hostname}: {err!r}")
                continue
            with self.progress:
                self.seen[index].append(got)
                self.progress.notify_all()

    def wait_until_each_saw(self, serial_number: int, times: int) -> bool:
        with self.progress:
            return self.progress.wait_for(
                lambda: (
                    all(s.count(serial_number) >= times for s in self.seen)
                    or not any(t.is_alive() for t in self.threads)
                ),
                timeout=60,
            ) and all(s.count(serial_number) >= times for s in self.seen)

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(30)


@contextlib.contextmanager
def running_gunicorn(tmp_path: Path, probe: bool = True) -> Iterator[tuple[int, Path, tls.TLSMaterial]]:
    """A real gunicorn (2 gthread workers) serving a tiny WSGI app, TLS through the one-line hook.

    With `probe`, it is up once its port accepts a connection (which a worker then handshakes); without,
    once the master listens: no connection has reached a worker yet.
    """
    certs = tmp_path / "tls"
    material, _ = tls.plan_tls_material(None, NAMES, ["127.0.0.1"], POLICY)
    tls.write_serving_files(certs, material)
    port = free_port()
    (tmp_path / "app.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'ok']\n"
    )
    (tmp_path / "gunicorn.conf.py").write_text(
        textwrap.dedent(
            f"""
            from webhook.tls import gunicorn_ssl_context
            bind = "127.0.0.1:{port}"
            workers = 2
            worker_class = "gthread"
            threads = 4
            loglevel = "debug"
            certfile = {str(certs / "tls.crt")!r}
            keyfile = {str(certs / "tls.key")!r}
            ssl_context = gunicorn_ssl_context(certfile, keyfile)
            """
        )
    )
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as stderr:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
            cwd=tmp_path,
            env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        if probe:
            wait_for_port(port, process)
        else:
            wait_until(lambda: process.poll() is not None or b"Listening at" in log.read_bytes(), timeout=30)
            assert process.poll() is None, log.read_text()
        yield port, certs, material
    finally:
        stop(process)


@pytest.fixture
def gunicorn_over_tls(tmp_path):
    with running_gunicorn(tmp_path) as server:
        yield server


def test_a_gunicorn_worker_whose_first_connection_comes_mid_renewal_serves_the_last_good_pair(tmp_path):
    """The failure this guards against: a worker that loaded its pair at its first connection failed that
    connection when it came between the renewal's two renames (new key, old certificate). gunicorn got
    the error from its ssl_context hook before it had wrapped the socket and answered a plaintext 403,
    which the client reported as WRONG_VERSION_NUMBER."""
    with running_gunicorn(tmp_path, probe=False) as (port, certs, material):
        renewed = tls.issue_serving_cert(material.ca, NAMES, ["127.0.0.1"])
        (certs / "tls.key").write_bytes(renewed.key_pem)  # the moment between write_serving_files' two renames
        client = Clients(port, certs / "ca.crt")
        for server_hostname in (HOST, "127.0.0.1") * 4:  # more connections than workers: each gets its first
            assert client._request(server_hostname) == serial(material.serving.cert_pem)
        (certs / "tls.crt").write_bytes(renewed.cert_pem)
        for server_hostname in (HOST, "127.0.0.1") * 4:
            assert client._request(server_hostname) == serial(renewed.cert_pem)
    assert b"Error processing SSL request" not in (tmp_path / "gunicorn.log").read_bytes()


def test_gunicorn_serves_a_renewed_certificate_under_load_without_a_failed_request(gunicorn_over_tls):
    port, certs, material = gunicorn_over_tls
    old = serial(material.serving.cert_pem)
    with Clients(port, certs / "ca.crt") as clients:
        assert clients.wait_until_each_saw(old, 5), clients.failures
        renewed = tls.TLSMaterial(
            material.ca, material.ca_bundle, tls.issue_serving_cert(material.ca, NAMES, ["127.0.0.1"], 90)
        )
        tls.write_serving_files(certs, renewed)
        new = serial(renewed.serving.cert_pem)
        assert clients.wait_until_each_saw(new, 5), clients.failures
    assert clients.failures == []
    for seen in clients.seen:
        first_new = seen.index(new)
        assert set(seen[:first_new]) == {old} and set(seen[first_new:]) == {new}  # never back to the old one


def test_a_server_that_wraps_its_socket_once_serves_the_renewed_pair_on_the_next_handshake(tmp_path):
    """The swap happens inside the handshake, so it works for servers that never ask for a new context."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    material, _ = tls.plan_tls_material(None, NAMES, ["127.0.0.1"], POLICY)
    tls.write_serving_files(tmp_path, material)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = tls.reloading_ssl_context(tmp_path / "tls.crt", tmp_path / "tls.key").wrap_socket(
        server.socket, server_side=True
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Clients(server.server_address[1], tmp_path / "ca.crt", count=2) as clients:
            assert clients.wait_until_each_saw(serial(material.serving.cert_pem), 3), clients.failures
            renewed = tls.issue_serving_cert(material.ca, NAMES, ["127.0.0.1"])
            tls.write_serving_files(tmp_path, tls.TLSMaterial(material.ca, material.ca_bundle, renewed))
            assert clients.wait_until_each_saw(serial(renewed.cert_pem), 3), clients.failures
        assert clients.failures == []
    finally:
        server.shutdown()
        server.server_close()
