"""No network request that an image string alone chose: whatever a Pod or a hint names, the webhook and the warmer
connect to the configured registries only.

In process, every socket connect and name lookup is recorded (and refused) while generated image strings go
through admission's resolver and the warmer's sightings (test_egress_server.py does the same over the real server).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from hypothesis import given

from tests.support import tally
from tests.support.hostile import examples, image_strings
from webhook.config import parse_config
from webhook.registry.client import Registries
from webhook.registry.evaluate import evaluate_images
from webhook.registry.resolver import Resolver
from webhook.testing.processes import free_port
from webhook.warmer.sightings import Sightings

UPSTREAM, CCR = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"  # nothing listens: every connect is refused
CONFIG = parse_config(
    {
        "ccr": {"registry": CCR, "insecure": True},
        "upstreams": [{"registry": UPSTREAM, "insecure": True, "prefix": "up"}],
        "resolver": {"negativeCacheSeconds": 0, "connectTimeoutSeconds": 0.2},
    }
)
ALLOWED = {UPSTREAM, CCR}
RESOLVER = Resolver(CONFIG, Registries(CONFIG))  # one for every example: its thread pool is made once


@contextlib.contextmanager
def recorded_connections() -> Iterator[list[str]]:
    """Every host:port connected to and every name looked up inside the block; connections are refused, not made."""
    seen: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> None:
        seen.append(f"{address[0]}:{address[1]}" if sock.family == socket.AF_INET else f"[{address[0]}]:{address[1]}")
        raise ConnectionRefusedError(111, "refused by the test")

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(f"{host}:{port}")
        return real_getaddrinfo(host, port, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo  # type: ignore[method-assign, assignment]
    try:
        yield seen
    finally:
        socket.socket.connect, socket.getaddrinfo = real_connect, real_getaddrinfo  # type: ignore[method-assign]


@examples(500)
@given(image_strings([UPSTREAM, CCR]))
def test_admission_and_the_warmer_connect_to_configured_registries_only(image):
    tally.count("hostile image strings (egress)")
    with recorded_connections() as seen:
        evaluate_images([image], CONFIG, RESOLVER, 2.0)
        Sightings(CONFIG, RESOLVER, 2.0).check([image])
    assert set(seen) <= ALLOWED, (image, seen)
