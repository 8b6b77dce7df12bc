"""The front's request grammar and its failure table, as tables: what each target becomes, or which 4xx it gets."""

from __future__ import annotations

import pytest

from webhook.front.answers import ANSWERS, Refused, answer_for
from webhook.front.flights import FlightFailed, SpoolFull
from webhook.front.routes import ROUTES, checked, route_of

D = "sha256:" + "a" * 64
D512 = "sha512:" + "b" * 128


@pytest.mark.parametrize(
    ("target", "route", "forwarded"),
    [
        ("/v2/", "v2", "/v2/"),
        ("/v2", "v2", "/v2/"),
        ("/v2/up/x/manifests/1.0", "manifest", "/v2/up/x/manifests/1.0"),
        (f"/v2/up/x/manifests/{D}", "manifest", f"/v2/up/x/manifests/{D}"),
        (f"/v2/up/x/blobs/{D}", "blob", f"/v2/up/x/blobs/{D}"),
        (f"/v2/up/x/blobs/{D512}", "blob", f"/v2/up/x/blobs/{D512}"),
        (f"/v2/up/x/blobs/{D}?ns=docker.io", "blob", f"/v2/up/x/blobs/{D}"),  # a mirror's ns: meaningless here
        (f"/v2/up/x/referrers/{D}?artifactType=a%2Fb", "referrers", f"/v2/up/x/referrers/{D}?artifactType=a%2Fb"),
        (
            f"/v2/up/x/referrers/{D}?artifactType=a/b.c%2Bjson&x=1&artifactType=c/d",
            "referrers",
            f"/v2/up/x/referrers/{D}?artifactType=a%2Fb.c%2Bjson",
        ),
        (f"/v2/up/x/referrers/{D}?artifactType=a%2Fb%0d%0aX:%20y", "referrers", f"/v2/up/x/referrers/{D}"),  # dropped
        (f"/v2/up/x/referrers/{D}?artifactType=a%2Fb%2F..%2Fc", "referrers", f"/v2/up/x/referrers/{D}"),
        (f"/v2/up/x/referrers/{D}?artifactType=", "referrers", f"/v2/up/x/referrers/{D}"),
        (f"/v2/up/x/manifests/{D}?artifactType=a%2Fb", "manifest", f"/v2/up/x/manifests/{D}"),
        ("/v2/up/x/tags/list?n=10&last=v1&x=%0d%0a", "tags", "/v2/up/x/tags/list?n=10&last=v1"),
        ("/v2/_catalog?n=5&last=up/x", "catalog", "/v2/_catalog?n=5&last=up%2Fx"),
        (f"http://ccr.test/v2/up/x/blobs/{D}", "blob", f"/v2/up/x/blobs/{D}"),  # absolute form
        ("/metrics", "metrics", None),
        ("/healthz", "healthz", None),
    ],
)
def test_targets_in_the_grammar_and_what_the_ccr_is_asked(target: str, route: str, forwarded: str | None) -> None:
    found = checked(route_of(target))
    assert found.name == route
    if forwarded is not None:
        assert found.target == forwarded


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/v2/up/x/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd", 400, "DIGEST_INVALID"),
        ("/v2/up/x/manifests/1.0%0d%0aX-Injected:%20yes", 400, "TAG_INVALID"),
        ("/v2/up/x/manifests/.hidden", 400, "TAG_INVALID"),
        ("/v2/up/x/manifests/" + "t" * 129, 400, "TAG_INVALID"),
        ("/v2/up/x/manifests/", 400, "TAG_INVALID"),
        ("/v2/up/x/manifests/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/up/x/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
        ("/v2/up/x/blobs/sha384:" + "a" * 96, 400, "DIGEST_INVALID"),
        ("/v2/up/x/blobs/sha512:" + "b" * 64, 400, "DIGEST_INVALID"),
        ("/v2/up/x/blobs/latest", 400, "DIGEST_INVALID"),
        (f"/v2/up/../x/blobs/{D}", 400, "NAME_INVALID"),
        (f"/v2/up/./x/blobs/{D}", 400, "NAME_INVALID"),
        (f"/v2/up/%2e%2e/x/blobs/{D}", 400, "NAME_INVALID"),
        (f"/v2/up%2fx/blobs/{D}", 400, "NAME_INVALID"),
        (f"/v2/Up/x/blobs/{D}", 400, "NAME_INVALID"),
        (f"/v2/up//x/blobs/{D}", 400, "NAME_INVALID"),
        (f"/v2/{'a' * 256}/blobs/{D}", 400, "NAME_INVALID"),
        ("/v2/up/x%0d%0a/tags/list", 400, "NAME_INVALID"),
        ("/v2/up/x/tags/list?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/up/x/tags/list?n=99999999", 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/up/x/tags/list?last=%0d%0a", 400, "TAG_INVALID"),
        ("/v2/_catalog?last=../x", 400, "NAME_INVALID"),
        ("/v2/up/x/blobs/uploads/", 404, "NOT_FOUND"),
        ("/v2/up/x/blobs/sha256:../../../etc/passwd", 404, "NOT_FOUND"),
        ("/etc/passwd", 404, "NOT_FOUND"),
        ("/", 404, "NOT_FOUND"),
    ],
)
def test_targets_outside_the_grammar_are_refused_with_an_oci_code(target: str, status: int, code: str) -> None:
    route = route_of(target)
    assert route.name in ROUTES
    with pytest.raises(Refused) as refused:
        checked(route)
    answer = answer_for(refused.value)
    assert answer is not None and (answer.status, answer.code) == (status, code)


@pytest.mark.parametrize(
    ("target", "route"),
    [
        (f"/peer/v2/up/x/blobs/{D}", "peer_blob"),
        ("/healthz", "healthz"),
        (f"/v2/up/x/blobs/{D}", "other"),  # the peer port serves its own paths only
        ("/metrics", "other"),
    ],
)
def test_the_peer_port_routes(target: str, route: str) -> None:
    assert route_of(target, peer=True).name == route


def test_a_peer_blob_is_checked_by_the_same_grammar() -> None:
    with pytest.raises(Refused) as refused:
        checked(route_of("/peer/v2/up/x/blobs/sha256:..%2f..%2fetc", peer=True))
    answer = answer_for(refused.value)
    assert answer is not None and answer.code == "DIGEST_INVALID"


def test_the_failure_table() -> None:
    spool_full = answer_for(SpoolFull("full"))
    assert spool_full is not None and (spool_full.status, spool_full.retry_after) == (503, 10)
    failed = answer_for(FlightFailed("upstream broke off"))
    assert failed is not None and failed.status == 502 and failed.code != "BLOB_UNKNOWN"  # the spec ties it to 404
    assert answer_for(ValueError("a bug")) is None  # not ours: it propagates
    kinds = [kind for kind, _ in ANSWERS]
    for at, kind in enumerate(kinds):  # no row is shadowed by a base class listed before it
        assert not any(issubclass(kind, earlier) for earlier in kinds[:at]), kind
