"""The front's server: the standard library's threaded HTTP server, one thread per connection, bounded.

Why this stack: single flight needs every reader of a blob in one process (gunicorn's several workers
would each fetch it), and a reader is a long stream that mostly waits on the socket or on the flight,
which threads do cheaply; sendfile moves spooled bytes without Python copying them. Connections beyond
MAX_CONNECTIONS are answered 503 at once instead of queueing without bound; TLS handshakes happen in the
connection's own thread, so a slow client never holds up accepting the next.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from webhook.config import Config
from webhook.front.app import Front, FrontRequestHandler
from webhook.http_service import split_listen
from webhook.tls import reloading_ssl_context

log = logging.getLogger("webhook.front")
MAX_CONNECTIONS = 512
HANDSHAKE_TIMEOUT_SECONDS = 10.0
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FrontServer(ThreadingHTTPServer):
    """Serves a Front on `config.front.listen`, over TLS when tlsCert and tlsKey are set."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, config: Config) -> None:
        host, port = split_listen(config.front.listen)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.front = Front(config, MAX_CONNECTIONS)
        handler = type("Handler", (FrontRequestHandler,), {"front": self.front})
        settings = config.front
        self._tls = (
            reloading_ssl_context(settings.tls_cert, settings.tls_key)
            if settings.tls_cert and settings.tls_key
            else None
        )
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), handler)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self._tls is not None:
                request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
                try:
                    request = self._tls.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError) as err:
                    log.debug("TLS handshake with %s failed: %s", client_address[0], err)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
