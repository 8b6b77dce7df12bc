"""The front's handler in-process, over a socket pair (nothing listens): the grammar refuses before anything is
forwarded, the failure table answers both ports alike, answers are counted by route and status."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.support.front_requests import ask, oci_code, request_bytes
from webhook.config import parse_config
from webhook.front.answers import BlobUnknown
from webhook.front.app import Front
from webhook.front.flights import SpoolFull
from webhook.front.handler import FrontRequestHandler, PeerRequestHandler
from webhook.front.peer_server import serve_peer
from webhook.front.peers import FLYING_ONLY
from webhook.front.routes import checked, route_of

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a request that reached the CCR or an upstream would be a 503/502
D = "sha256:" + "a" * 64


@pytest.fixture
def front(tmp_path: Path) -> Front:
    config = parse_config(
        {
            "ccr": {"registry": "ccr.test", "endpoint": NOWHERE, "insecure": True},
            "upstreams": [{"registry": "upstream.test", "endpoint": NOWHERE, "insecure": True, "prefix": "up"}],
            "front": {"spoolDir": str(tmp_path / "spool")},
        }
    )
    return Front(config, max_connections=4)


def requests_counted(front: Front, route: str, status: str) -> float:
    return front.metrics.requests.labels(route, status)._value.get()


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/up/x/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd", 400, "DIGEST_INVALID"),
        ("/v2/up/x/manifests/1.0%0d%0aX-Injected:%20yes", 400, "TAG_INVALID"),
        (f"/v2/up/%2e%2e/x/blobs/{D}", 400, "NAME_INVALID"),
        ("/v2/up/x/blobs/uploads/", 404, "NOT_FOUND"),
    ],
)
def test_a_request_outside_the_grammar_is_answered_before_anything_is_asked(
    front: Front, path: str, status: int, code: str
) -> None:
    answered, headers, body = ask(front, request_bytes(path))
    assert (answered, oci_code(body), headers["Content-Type"]) == (status, code, "application/json")
    route = "other" if code == "NOT_FOUND" else ("manifest" if "/manifests/" in path else "blob")
    assert requests_counted(front, route, str(status)) == 1


def test_a_request_in_the_grammar_does_go_to_the_ccr(front: Front) -> None:
    answered, headers, body = ask(front, request_bytes(f"/v2/up/x/blobs/{D}"))  # the control: the CCR is unreachable
    assert (answered, oci_code(body), headers["Retry-After"]) == (503, "UNAVAILABLE", "10")


def test_writes_are_refused(front: Front) -> None:
    answered, _, body = ask(
        front, request_bytes("/v2/up/x/blobs/uploads/", method="POST", headers="Content-Length: 0\r\n")
    )
    assert (answered, oci_code(body)) == (405, "UNSUPPORTED")


def test_health_and_metrics_count_their_answers(front: Front) -> None:
    assert ask(front, request_bytes("/healthz"))[0] == 200
    status, _, body = ask(front, request_bytes("/metrics"))
    assert status == 200 and b'ccr_front_requests_total{route="healthz",status="200"} 1.0' in body


def test_the_peer_port_wants_the_secret(front: Front, tmp_path: Path) -> None:
    front.peers = type("Peers", (), {"secret": "s3cret"})()  # type: ignore[assignment]
    status, _, body = ask(front, request_bytes(f"/peer/v2/up/x/blobs/{D}"), PeerRequestHandler)
    assert (status, oci_code(body)) == (401, "UNAUTHORIZED")
    status, _, body = ask(
        front,
        request_bytes("/peer/v2/up/x/blobs/sha256:..%2fetc", headers="Authorization: Bearer s3cret\r\n"),
        PeerRequestHandler,
    )
    assert (status, oci_code(body)) == (400, "DIGEST_INVALID")
    assert (
        ask(front, request_bytes("/healthz", headers="Authorization: Bearer s3cret\r\n"), PeerRequestHandler)[0] == 200
    )
    assert requests_counted(front, "peer_blob", "401") == 1


@pytest.mark.parametrize("peer", [False, True])
def test_a_full_spool_gets_retry_after_on_both_ports(front: Front, monkeypatch: pytest.MonkeyPatch, peer: bool) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise SpoolFull("the spool holds 10 of 10 bytes")

    monkeypatch.setattr(front.flights, "ensure", full)
    monkeypatch.setattr(front, "_pass_through", lambda *args: False)  # the CCR lacks the blob
    front.peers = type("Peers", (), {"secret": "s"})()  # type: ignore[assignment]
    path = f"/peer/v2/up/x/blobs/{D}" if peer else f"/v2/up/x/blobs/{D}"
    handler = PeerRequestHandler if peer else FrontRequestHandler
    status, headers, body = ask(front, request_bytes(path, headers="Authorization: Bearer s\r\n"), handler)
    assert (status, headers.get("Retry-After"), oci_code(body)) == (503, "10", "UNAVAILABLE")


def test_flying_only_is_served_only_from_a_fetch_from_upstream_running_here(front: Front) -> None:
    origin = front.origin(checked(route_of(f"/peer/v2/up/x/blobs/{D}", peer=True)))
    asking = cast(Any, SimpleNamespace(headers={FLYING_ONLY: "1"}))
    with pytest.raises(BlobUnknown, match="no fetch"):
        serve_peer(front, asking, origin, D)
    assert front.flights.find(origin.target_repository, D) is None  # and none was started for the asker
