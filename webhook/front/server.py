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
from webhook.front.app import Front
from webhook.front.handler import FrontRequestHandler, PeerRequestHandler
from webhook.http_service import split_listen
from webhook.tls import reloading_ssl_context

log = logging.getLogger("webhook.front")
MAX_CONNECTIONS = 512
HANDSHAKE_TIMEOUT_SECONDS = 10.0
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FrontServer(ThreadingHTTPServer):
    """Serves a Front on `config.front.listen`, over TLS when tlsCert and tlsKey are set.

    With peers configured it also runs the peer endpoint, the same Front on `front.peerListen` (`peer`)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, config: Config, front: Front | None = None, peer: bool = False) -> None:
        settings = config.front
        listen, cert, key = (
            (settings.peer_listen, settings.peer_tls_cert, settings.peer_tls_key)
            if peer
            else (settings.listen, settings.tls_cert, settings.tls_key)
        )
        host, port = split_listen(listen)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.front = front or Front(config, MAX_CONNECTIONS)
        base = PeerRequestHandler if peer else FrontRequestHandler
        handler = type("Handler", (base,), {"front": self.front})
        self._tls = reloading_ssl_context(cert, key) if cert and key else None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), handler)
        self.peer_server = FrontServer(config, self.front, peer=True) if settings.peering and not peer else None
        self._peer_thread: threading.Thread | None = None

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        if self.peer_server is not None and self._peer_thread is None:
            self._peer_thread = threading.Thread(
                target=self.peer_server.serve_forever, args=(poll_interval,), name="front-peers", daemon=True
            )
            self._peer_thread.start()
        super().serve_forever(poll_interval)

    def shutdown(self) -> None:
        if self.peer_server is not None and self._peer_thread is not None:  # shutdown() waits for a loop that ran
            self.peer_server.shutdown()
        super().shutdown()

    def server_close(self) -> None:
        if self.peer_server is not None:
            self.peer_server.server_close()
        super().server_close()

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
