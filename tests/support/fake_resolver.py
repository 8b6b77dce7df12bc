"""A stand-in for socket.getaddrinfo, so tests can make names resolve where they want without DNS."""

from __future__ import annotations

import socket


class FakeResolver:
    """getaddrinfo over a table of names; records every name asked; a name asked twice gets `rebound_to`."""

    def __init__(self, table: dict[str, list[str]], rebound_to: str = "10.66.66.66") -> None:
        self.table, self.rebound_to = table, rebound_to
        self.asked: list[str] = []

    def __call__(self, host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        again = host in self.asked
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown name")
        addresses = [self.rebound_to] if again else self.table[host]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses
        ]
