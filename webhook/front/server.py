"""The front's servers: the node-facing port and, with peers, the peer port, each one `http_service.BoundedServer`.

Why this stack: single flight needs every reader of a blob in one process (gunicorn's several workers
would each fetch it), and a reader is a long stream that mostly waits on the socket or on the flight,
which threads do cheaply; sendfile moves spooled bytes without Python copying them. The bounded server
gathers each request (and does the TLS handshake) in its event loop, so only a whole request takes one of
MAX_CONNECTIONS threads; `/healthz` is answered by the loop itself, so the kubelet's probe is answered
however busy the threads are.
"""

from __future__ import annotations

import threading

from webhook.config import Config
from webhook.front.app import Front
from webhook.front.handler import FrontRequestHandler, PeerRequestHandler
from webhook.http_service import BoundedServer, Reply
from webhook.tls import reloading_ssl_context

MAX_CONNECTIONS = 512  # requests answered at once on each port; a whole request beyond them gets 503 Retry-After: 1


class FrontServer:
    """Serves a Front on `config.front.listen` (TLS when tlsCert and tlsKey are set) and, with peers configured,
    on `front.peerListen` (`peer_server`); `serve_forever`, `shutdown` and `server_close` drive both."""

    def __init__(self, config: Config, front: Front | None = None) -> None:
        settings = config.front
        self.front = front or Front(config, MAX_CONNECTIONS)
        bounds = {
            "threads": MAX_CONNECTIONS,
            "per_address": settings.max_connections_per_address,
            "head_seconds": settings.head_timeout_seconds,
            "max_body": 0,  # pulls only: a request with a body is answered (405) as soon as its head is in
        }
        cert, key = settings.tls_cert, settings.tls_key
        self.server = BoundedServer(
            settings.listen,
            type("FrontHandler", (FrontRequestHandler,), {"front": self.front}),
            tls=reloading_ssl_context(cert, key) if cert and key else None,
            probes={"/healthz": lambda: Reply(200, b"ok\n")},
            name="front",
            **bounds,  # type: ignore[arg-type]
        )
        self.peer_server: BoundedServer | None = None
        if settings.peering:
            cert, key = settings.peer_tls_cert, settings.peer_tls_key
            self.peer_server = BoundedServer(
                settings.peer_listen,
                type("PeerHandler", (PeerRequestHandler,), {"front": self.front}),
                tls=reloading_ssl_context(cert, key) if cert and key else None,
                name="front-peers",
                **bounds,  # type: ignore[arg-type]
            )
        self._peer_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The node-facing port."""
        return self.server.port

    def serve_forever(self, poll_interval: float = 0.25) -> None:
        """Serve both ports until `shutdown()` (the peer port from a thread of its own)."""
        if self.peer_server is not None and self._peer_thread is None:
            self._peer_thread = threading.Thread(
                target=self.peer_server.serve_forever, args=(poll_interval,), name="front-peers", daemon=True
            )
            self._peer_thread.start()
        self.server.serve_forever(poll_interval)

    def shutdown(self) -> None:
        """Stop both loops."""
        if self.peer_server is not None and self._peer_thread is not None:
            self.peer_server.shutdown()
        self.server.shutdown()

    def server_close(self) -> None:
        """Close both listening sockets."""
        if self.peer_server is not None:
            self.peer_server.server_close()
        self.server.server_close()
