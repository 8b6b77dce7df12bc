"""The reloading TLS context: a renewed pair is served on the next handshake, a bad or half-written one never
fails a handshake, and each forked worker reloads on its own. Handshakes in memory, no server.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.certificates import HOST, NAMES, POLICY, serial
from webhook import tls


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
