"""Servers that misbehave in ways a proxy cannot: one that accepts connections and never answers, and a
registry whose stored blob no longer matches its digest."""

from __future__ import annotations

import socket
import threading

from webhook.testing.processes import RegistryServer


class SilentServer:
    """A TCP server that accepts connections and never answers them, counting them."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((address, 0))
        self.host = f"{address}:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        """Stop listening and close every connection held."""
        self.listener.close()
        for connection in self.held:
            connection.close()


def corrupt_blob(server: RegistryServer, digest: str) -> None:
    """Flip one byte of a blob in the registry's storage, keeping its length (flipping it again repairs it)."""
    hex_digest = digest.split(":", 1)[1]
    path = server.root / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)
