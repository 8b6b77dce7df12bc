"""The server side: an SSL context serving whatever pair is on disk at each handshake, reloaded when it changes."""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ReloadingCertificate:
    """Serves the certificate pair that is on disk now; see `reloading_ssl_context`.

    Nothing here may fail a handshake: the callback runs inside OpenSSL's handshake, where any exception
    aborts it. Whatever goes wrong while reloading (files missing, a pair caught between two renames, a
    bug) is logged and the handshake gets the last pair that loaded.
    """

    START_RETRY_SECONDS = 2.0  # how long the first load waits for a pair caught mid-renewal to agree

    def __init__(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        self.cert_path = str(cert_path)
        self.key_path = str(key_path)
        self._lock = threading.Lock()
        self._stamp, self._current = self._first_load()  # a pair that cannot be loaded at start is an error
        self._failed_stamp: object = None
        self.reloads = 0
        self.context = self._current
        self.context.sni_callback = self._on_client_hello
        _RELOADING.add(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def _first_load(self) -> tuple[tuple[bytes | None, bytes | None], ssl.SSLContext]:
        """The pair on disk and its context. A pair that does not agree (the writer is between its two
        renames) is read again for a moment; missing files, or a pair that still disagrees, raise."""
        deadline = time.monotonic() + self.START_RETRY_SECONDS
        while True:
            stamp = cert_pem, key_pem = Path(self.cert_path).read_bytes(), Path(self.key_path).read_bytes()
            try:
                return stamp, self._build(cert_pem, key_pem)
            except ssl.SSLError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _build(self, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        """A server context for exactly these bytes: the pair that was compared is the pair that is loaded,
        whatever happens to the files meanwhile."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with _pem_path(cert_pem) as cert_file, _pem_path(key_pem) as key_file:
            context.load_cert_chain(cert_file, key_file)
        return context

    def _file_stamp(self) -> tuple[bytes | None, bytes | None]:
        """What is in the two files now. Their content, not their mtime: a file rewritten in place
        within one clock tick keeps its size and mtime, and reading two small files costs far less
        than the handshake it precedes. Symlinks (Secret volumes swap one) are followed."""
        stamps: list[bytes | None] = []
        for path in (self.cert_path, self.key_path):
            try:
                with open(path, "rb") as handle:
                    stamps.append(handle.read())
            except OSError:
                stamps.append(None)
        return stamps[0], stamps[1]

    def current(self) -> ssl.SSLContext:
        """The context for the pair on disk; the last good one while the files are missing or disagree."""
        stamp = self._file_stamp()
        if stamp == self._stamp or stamp == self._failed_stamp:
            return self._current
        with self._lock:
            if stamp != self._stamp and stamp != self._failed_stamp:
                cert_pem, key_pem = stamp
                try:
                    if cert_pem is None or key_pem is None:
                        raise FileNotFoundError(
                            f"{self.cert_path if cert_pem is None else self.key_path} cannot be read"
                        )
                    context = self._build(cert_pem, key_pem)
                except (OSError, ssl.SSLError) as err:
                    self._failed_stamp = stamp
                    log.warning(
                        "TLS certificate at %s not loaded, still serving the previous one: %s", self.cert_path, err
                    )
                except Exception:
                    self._failed_stamp = stamp
                    log.exception("TLS certificate at %s not loaded, still serving the previous one", self.cert_path)
                else:
                    self._stamp, self._current = stamp, context
                    self.reloads += 1
                    log.info("TLS certificate reloaded from %s", self.cert_path)
            return self._current

    def _on_client_hello(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        # Called for every handshake, with or without SNI, before the certificate is chosen. An exception
        # raised here would abort the handshake, so none leaves.
        try:
            ssl_object.context = self.current()
        except Exception:
            log.exception("TLS certificate check failed; this handshake keeps the last loaded pair")
            try:
                ssl_object.context = self._current
            except Exception:
                log.exception("TLS context not switched; this handshake uses the listening socket's pair")


# A lock held by another thread at a fork stays held in the child forever: each process gets new ones.
_RELOADING: weakref.WeakSet[ReloadingCertificate] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for reloading in list(_RELOADING):
        reloading._after_fork()


os.register_at_fork(after_in_child=_renew_locks_in_child)


@contextlib.contextmanager
def _pem_path(content: bytes) -> Iterator[str]:
    """A path from which OpenSSL reads `content`: an anonymous in-memory file on Linux (a private key
    never touches a disk), elsewhere a temporary file readable by its owner only, removed after use."""
    try:
        fd = os.memfd_create("ccr-webhook-tls", os.MFD_CLOEXEC) if os.path.isdir("/proc/self/fd") else -1
    except (AttributeError, OSError):  # not Linux, or a seccomp profile that forbids it
        fd = -1
    if fd >= 0:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="ccr-webhook-tls-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        yield path
    finally:
        os.unlink(path)


def reloading_ssl_context(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> ssl.SSLContext:
    """A server `ssl.SSLContext` (TLS 1.2 minimum) that serves the pair on disk at each handshake.

    Every handshake reads the two files (small, cheap) and, when they changed, loads those bytes into a new
    context that this and later handshakes use; connections already open keep theirs, so nothing is
    dropped. A pair that does not load (missing, or key and certificate disagree mid-update) is skipped:
    the last good pair is served until the files change again. Only the first load may fail (OSError,
    ssl.SSLError); after it no reload problem fails a handshake.
    """
    return ReloadingCertificate(cert_path, key_path).context


def gunicorn_ssl_context(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    """A gunicorn `ssl_context` hook serving a reloading pair: `ssl_context = gunicorn_ssl_context(cert, key)`.

    The pair is loaded here, when gunicorn reads its configuration in the master, and an unloadable pair
    raises here (OSError, ssl.SSLError). Every worker inherits that loaded pair through fork and reloads
    on its own from then on, so a worker's first handshake has a pair to fall back on. (Loading lazily,
    at a worker's first connection, failed that connection when it came while the files were being
    renewed: gunicorn raises from the hook before it has wrapped the socket and answers a plaintext
    error, which clients report as WRONG_VERSION_NUMBER.) gunicorn only turns TLS on when `certfile`
    and `keyfile` are set, so set them to the same paths.
    """
    context = reloading_ssl_context(cert_path, key_path)

    def ssl_context(config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    return ssl_context
