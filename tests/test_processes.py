"""The harness's port picking: a port handed to a server is one no outgoing connection can take first."""

from __future__ import annotations

import socket

from webhook.testing import processes


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ephemeral = processes._ephemeral_start()
    ports = [processes.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports), "never the same port twice, bound or not"
    assert all(1024 <= port < ephemeral for port in ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_handed_out(monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        used = taken.getsockname()[1]
        first = iter([used, used])  # the port in use, twice; then the real random choice
        randrange = processes.random.randrange
        monkeypatch.setattr(
            processes.random, "randrange", lambda bottom, top: next(first, None) or randrange(bottom, top)
        )
        monkeypatch.setattr(processes, "_handed_out", processes.collections.deque(maxlen=8))
        assert processes.free_port() != used
