"""Requests to an in-process Front through its real handler over a socket pair: no port, no thread of a server."""

from __future__ import annotations

import json
import socket

from webhook.front.app import Front
from webhook.front.handler import FrontRequestHandler


def request_bytes(path: str, method: str = "GET", headers: str = "") -> bytes:
    """An HTTP/1.1 request for `path` that closes its connection; `headers` as raw `Name: value\\r\\n` lines."""
    return f"{method} {path} HTTP/1.1\r\nHost: ccr.test\r\nConnection: close\r\n{headers}\r\n".encode()


def ask(
    front: Front, request: bytes, handler: type[FrontRequestHandler] = FrontRequestHandler
) -> tuple[int, dict[str, str], bytes]:
    """One request through `handler` serving `front` over a socket pair: (status, headers, body)."""
    served, client = socket.socketpair()
    with served, client:
        client.settimeout(60)
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        type("Handler", (handler,), {"front": front})(served, ("127.0.0.1", 40000), None)
        served.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def oci_code(body: bytes) -> str:
    """The code of the first error in an OCI error body."""
    return str(json.loads(body)["errors"][0]["code"])
