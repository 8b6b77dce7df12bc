"""Certificates for real: chains verify, renewal is planned right, and a real gunicorn over TLS picks up
a renewed certificate under load without failing a request."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhook import tls
from webhook.testing.processes import free_port, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
HOST = "ccr-webhook.ccr-system.svc"
NAMES = tls.service_dns_names("ccr-webhook", "ccr-system")
DAY = datetime.timedelta(days=1)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


# -- chains ------------------------------------------------------------------------------------------


def test_service_names_cover_every_form_the_api_server_may_use():
    assert tls.service_dns_names("ccr-webhook", "ccr-system") == [
        "ccr-webhook",
        "ccr-webhook.ccr-system",
        "ccr-webhook.ccr-system.svc",
        "ccr-webhook.ccr-system.svc.cluster.local",
    ]


def test_generated_chain_verifies_for_every_san_and_nothing_else():
    ca = tls.generate_ca()
    pair = tls.issue_serving_cert(ca, NAMES, ["127.0.0.1", "::1"])
    for host in [*NAMES, "127.0.0.1", "::1"]:
        tls.verify_serving_certificate(ca.cert_pem, pair.cert_pem, host)
    info = tls.describe_certificate(pair.cert_pem)
    assert info.dns_names == tuple(NAMES) and info.ip_addresses == ("127.0.0.1", "::1") and not info.is_ca
    assert tls.describe_certificate(ca.cert_pem).is_ca
    with pytest.raises(tls.CertificateError, match="subjectAltName"):
        tls.verify_serving_certificate(ca.cert_pem, pair.cert_pem, "evil.example.com")
    with pytest.raises(tls.CertificateError):
        tls.verify_serving_certificate(tls.generate_ca().cert_pem, pair.cert_pem, HOST)
    with pytest.raises(tls.CertificateError):
        tls.verify_serving_certificate(ca.cert_pem, pair.cert_pem, HOST, now() + 400 * DAY)
    assert tls.key_matches_certificate(pair.cert_pem, pair.key_pem)
    assert not tls.key_matches_certificate(pair.cert_pem, ca.key_pem)


def test_serving_certificate_never_outlives_its_ca():
    ca = tls.generate_ca(days=10)
    pair = tls.issue_serving_cert(ca, NAMES, days=365)
    assert tls.describe_certificate(pair.cert_pem).not_after <= tls.describe_certificate(ca.cert_pem).not_after


def test_a_bundle_of_two_cas_verifies_certificates_of_either():
    old, new = tls.generate_ca(), tls.generate_ca()
    bundle = new.cert_pem + old.cert_pem
    for ca in (old, new):
        tls.verify_serving_certificate(bundle, tls.issue_serving_cert(ca, NAMES).cert_pem, HOST)


# -- renewal planning --------------------------------------------------------------------------------

POLICY = tls.RenewalPolicy(serving_days=90, ca_days=3650)


def test_plan_makes_material_from_nothing_and_then_keeps_it():
    material, reason = tls.plan_tls_material(None, NAMES, [], POLICY)
    assert reason == "no certificate yet"
    tls.verify_serving_certificate(material.ca_bundle, material.serving.cert_pem, HOST)
    assert tls.plan_tls_material(material, NAMES, [], POLICY) == (material, None)


def test_plan_renews_the_serving_certificate_with_a_third_of_its_life_left():
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY, now=now() - 59 * DAY)
    assert tls.plan_tls_material(material, NAMES, [], POLICY)[1] is None  # 31 of 90 days left
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY, now=now() - 61 * DAY)
    renewed, reason = tls.plan_tls_material(material, NAMES, [], POLICY)
    assert reason.startswith("the serving certificate expires")
    assert renewed.ca == material.ca and renewed.ca_bundle == material.ca_bundle  # same CA: the caBundle stays
    assert serial(renewed.serving.cert_pem) != serial(material.serving.cert_pem)
    tls.verify_serving_certificate(material.ca_bundle, renewed.serving.cert_pem, HOST, now() + 80 * DAY)


def test_plan_reissues_when_the_service_names_change_or_the_pair_is_broken():
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    other = tls.service_dns_names("ccr-webhook", "other-namespace")
    renamed, reason = tls.plan_tls_material(material, other, [], POLICY)
    assert reason == "the serving certificate names other hosts than the Service"
    assert tls.describe_certificate(renamed.serving.cert_pem).dns_names == tuple(other)
    broken = tls.TLSMaterial(
        material.ca, material.ca_bundle, tls.KeyPair(material.serving.cert_pem, material.ca.key_pem)
    )
    assert (
        tls.plan_tls_material(broken, NAMES, [], POLICY)[1] == "the serving key does not match the serving certificate"
    )
    foreign = tls.TLSMaterial(material.ca, material.ca_bundle, tls.issue_serving_cert(tls.generate_ca(), NAMES))
    assert "does not verify against the CA" in tls.plan_tls_material(foreign, NAMES, [], POLICY)[1]


def test_plan_rotates_a_ca_near_its_end_keeping_the_old_one_trusted_until_it_expires():
    old_ca = tls.generate_ca(days=365, now=now() - 200 * DAY)  # 165 days left: less than two serving lifetimes
    material = tls.TLSMaterial(old_ca, old_ca.cert_pem, tls.issue_serving_cert(old_ca, NAMES, days=90))
    rotated, reason = tls.plan_tls_material(material, NAMES, [], POLICY)
    assert reason.startswith("the CA expires")
    trusted = tls.load_certificates(rotated.ca_bundle)
    assert [serial(c.public_bytes(serialization.Encoding.PEM)) for c in trusted] == [
        serial(rotated.ca.cert_pem),
        serial(material.ca.cert_pem),
    ]
    tls.verify_serving_certificate(rotated.ca_bundle, material.serving.cert_pem, HOST)  # old pair still trusted
    tls.verify_serving_certificate(rotated.ca_bundle, rotated.serving.cert_pem, HOST)
    # once the old CA has expired it leaves the bundle
    later, reason = tls.plan_tls_material(rotated, NAMES, [], POLICY, now=now() + 170 * DAY)
    assert later.ca_bundle == rotated.ca.cert_pem and reason.startswith("the serving certificate expired")
    pruned, reason = tls.plan_tls_material(
        tls.TLSMaterial(rotated.ca, rotated.ca_bundle, later.serving), NAMES, [], POLICY, now=now() + 170 * DAY
    )
    assert reason == "expired CAs dropped from the bundle" and pruned.ca_bundle == rotated.ca.cert_pem


def test_serving_files_are_replaced_whole_and_only_when_they_change(tmp_path):
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    assert tls.write_serving_files(tmp_path, material)
    assert not tls.write_serving_files(tmp_path, material)
    assert (tmp_path / "tls.crt").read_bytes() == material.serving.cert_pem
    assert (tmp_path / "tls.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]


# -- the reloading context ---------------------------------------------------------------------------


def test_reloading_context_requires_tls12_and_a_loadable_pair_at_start(tmp_path):
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    tls.write_serving_files(tmp_path, material)
    context = tls.reloading_ssl_context(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(OSError):
        tls.reloading_ssl_context(tmp_path / "missing.crt", tmp_path / "tls.key")


def test_reloading_keeps_the_last_good_pair_while_key_and_certificate_disagree(tmp_path):
    first, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    tls.write_serving_files(tmp_path, first)
    reloading = tls.ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
    original = reloading.current()
    assert reloading.current() is original  # unchanged files: no reload
    second = tls.issue_serving_cert(first.ca, NAMES)
    (tmp_path / "tls.key").write_bytes(second.key_pem)  # half an update: new key, old certificate
    assert reloading.current() is original and reloading.reloads == 0
    (tmp_path / "tls.crt").write_bytes(second.cert_pem)
    assert reloading.current() is not original and reloading.reloads == 1
    (tmp_path / "tls.crt").unlink()  # a missing file does not stop serving either
    assert reloading.reloads == 1 and reloading.current() is not original


def handshake(server_context: ssl.SSLContext, ca_file: Path, server_hostname: str = HOST) -> int:
    """One TLS handshake in memory (no sockets, no threads); the serial number of the certificate served."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = ssl.create_default_context(cafile=str(ca_file)).wrap_bio(
        client_in, client_out, server_hostname=server_hostname
    )
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    done = {client: False, server: False}
    for _ in range(10):
        for side, outgoing, incoming in ((client, client_out, server_in), (server, server_out, client_in)):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            incoming.write(outgoing.read())
        if all(done.values()):
            return x509.load_der_x509_certificate(client.getpeercert(binary_form=True)).serial_number
    raise AssertionError("the handshake did not complete")


def test_a_reload_that_fails_in_any_way_never_fails_a_handshake(tmp_path, monkeypatch, caplog):
    """The callback runs inside OpenSSL's handshake, where any exception aborts it; none may escape."""
    first, _ = tls.plan_tls_material(None, NAMES, ["127.0.0.1"], POLICY)
    tls.write_serving_files(tmp_path, first)
    reloading = tls.ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
    ca_file = tmp_path / "ca.crt"
    assert handshake(reloading.context, ca_file) == serial(first.serving.cert_pem)

    def broken_build(cert_pem, key_pem):
        raise RuntimeError("a bug in the reload")

    monkeypatch.setattr(reloading, "_build", broken_build)
    second = tls.issue_serving_cert(first.ca, NAMES, ["127.0.0.1"])
    tls.write_serving_files(tmp_path, tls.TLSMaterial(first.ca, first.ca_bundle, second))
    with caplog.at_level(logging.ERROR, logger="webhook.tls"):
        assert handshake(reloading.context, ca_file) == serial(first.serving.cert_pem)
        assert handshake(reloading.context, ca_file, "127.0.0.1") == serial(first.serving.cert_pem)  # no SNI
    assert "a bug in the reload" in caplog.text and reloading.reloads == 0

    def broken_stamp():
        raise MemoryError("reading the files")

    monkeypatch.setattr(reloading, "_file_stamp", broken_stamp)
    assert handshake(reloading.context, ca_file) == serial(first.serving.cert_pem)

    monkeypatch.undo()  # the reload works again: the next pair written is served
    third = tls.issue_serving_cert(first.ca, NAMES, ["127.0.0.1"])
    tls.write_serving_files(tmp_path, tls.TLSMaterial(first.ca, first.ca_bundle, third))
    assert handshake(reloading.context, ca_file) == serial(third.cert_pem) and reloading.reloads == 1


def test_the_pair_loaded_is_the_pair_compared(tmp_path, monkeypatch):
    """A reload builds from the bytes it read, not from the files again: they may have changed meanwhile."""
    first, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    tls.write_serving_files(tmp_path, first)
    reloading = tls.ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
    second = tls.issue_serving_cert(first.ca, NAMES)
    tls.write_serving_files(tmp_path, tls.TLSMaterial(first.ca, first.ca_bundle, second))
    build = reloading._build

    def build_while_the_files_change(cert_pem, key_pem):
        (tmp_path / "tls.key").write_bytes(tls.issue_serving_cert(first.ca, NAMES).key_pem)  # a third renewal begins
        return build(cert_pem, key_pem)

    monkeypatch.setattr(reloading, "_build", build_while_the_files_change)
    assert handshake(reloading.context, tmp_path / "ca.crt") == serial(second.cert_pem) and reloading.reloads == 1


def test_the_first_load_waits_a_moment_for_a_pair_caught_mid_renewal(tmp_path, monkeypatch):
    first, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    tls.write_serving_files(tmp_path, first)
    second = tls.issue_serving_cert(first.ca, NAMES)
    (tmp_path / "tls.key").write_bytes(second.key_pem)  # between write_serving_files' two renames
    finish = threading.Timer(0.2, (tmp_path / "tls.crt").write_bytes, args=(second.cert_pem,))
    finish.start()
    try:
        context = tls.reloading_ssl_context(tmp_path / "tls.crt", tmp_path / "tls.key")
    finally:
        finish.join()
    assert handshake(context, tmp_path / "ca.crt") == serial(second.cert_pem)
    (tmp_path / "tls.key").write_bytes(first.serving.key_pem)  # a pair that never agrees is an error at start
    monkeypatch.setattr(tls.ReloadingCertificate, "START_RETRY_SECONDS", 0.1)
    with pytest.raises(ssl.SSLError, match="KEY_VALUES_MISMATCH"):
        tls.reloading_ssl_context(tmp_path / "tls.crt", tmp_path / "tls.key")


def test_the_gunicorn_hook_loads_the_pair_before_any_worker_exists(tmp_path):
    """Loaded in the master, inherited by every worker: a worker's first handshake has a pair to fall back on."""
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    with pytest.raises(OSError):
        tls.gunicorn_ssl_context(tmp_path / "tls.crt", tmp_path / "tls.key")
    tls.write_serving_files(tmp_path, material)
    hook = tls.gunicorn_ssl_context(tmp_path / "tls.crt", tmp_path / "tls.key")
    (tmp_path / "tls.key").write_bytes(tls.issue_serving_cert(material.ca, NAMES).key_pem)  # a renewal begins
    context = hook(None, lambda: pytest.fail("the default factory is not used"))
    assert context is hook(None, None)
    assert handshake(context, tmp_path / "ca.crt") == serial(material.serving.cert_pem)


def test_a_forked_worker_gets_its_own_reload_lock(tmp_path):
    material, _ = tls.plan_tls_material(None, NAMES, [], POLICY)
    tls.write_serving_files(tmp_path, material)
    reloading = tls.ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
    with reloading._lock:  # another thread is reloading at the moment of the fork
        pid = os.fork()
        if pid == 0:
            os._exit(0 if reloading._lock.acquire(timeout=5) else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_handshakes_never_fail_while_the_pair_is_rewritten_in_a_tight_loop(tmp_path):
    """Handshakes on several threads, and servers starting, while renewals follow one another as fast as
    they can: every handshake completes with one of the pairs written, and no start fails."""
    material, _ = tls.plan_tls_material(None, NAMES, ["127.0.0.1"], POLICY)
    tls.write_serving_files(tmp_path, material)
    pairs = [material.serving] + [tls.issue_serving_cert(material.ca, NAMES, ["127.0.0.1"]) for _ in range(3)]
    written = {serial(pair.cert_pem) for pair in pairs}
    reloading = tls.ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
    stop_at = time.monotonic() + 2.0
    failures: list[str] = []
    served: list[int] = []
    renewals = 0

    def handshakes(server_hostname: str) -> None:
        while time.monotonic() < stop_at:
            try:
                served.append(handshake(reloading.context, tmp_path / "ca.crt", server_hostname))
            except Exception as err:
                failures.append(f"handshake: {err!r}")

    def starts() -> None:
        while time.monotonic() < stop_at:
            try:
                tls.ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
            except Exception as err:
                failures.append(f"start: {err!r}")

    threads = [threading.Thread(target=handshakes, args=(name,)) for name in (HOST, "127.0.0.1", HOST)]
    threads.append(threading.Thread(target=starts))
    for thread in threads:
        thread.start()
    while time.monotonic() < stop_at:
        renewals += 1
        tls.write_serving_files(
            tmp_path, tls.TLSMaterial(material.ca, material.ca_bundle, pairs[renewals % len(pairs)])
        )
    for thread in threads:
        thread.join()
    assert failures == []
    assert served and set(served) <= written and renewals > 1


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
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with self.context.wrap_socket(raw, server_hostname=server_hostname) as conn:
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
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n"
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
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),
    )
    try:
        if probe:
            wait_for_port(port, process)
        else:
            deadline = time.monotonic() + 15
            while b"Listening at" not in log.read_bytes():
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield port, certs, material
    finally:
        stop(process)


@pytest.fixture
def gunicorn_over_tls(tmp_path):
    with running_gunicorn(tmp_path) as server:
        yield server


@pytest.mark.integration
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


@pytest.mark.integration
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
