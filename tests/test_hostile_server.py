"""Hostile input over real HTTPS against the real TLS server: generated bodies (fewer examples than the pure tests),
and the shapes a generator would rarely reach (thousands of containers, deep nesting, chunked bodies past the limit).

Every answer is an AdmissionReview for the review's uid, or a 4xx with a reason; never a 5xx. Every patch applies
with jsonpatch and touches image fields and the webhook's own annotation only.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator

import pytest
import urllib3
from hypothesis import given
from hypothesis import strategies as st

from tests.support import tally
from tests.support.hostile import check_answer, deeply_nested, examples, reviews
from tests.support.waiting import deadline_ceiling
from webhook.policy.review import BadReview, parse_review
from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import PushedImage, push_sample_image
from webhook.testing.webhook_process import LocalWebhook

pytestmark = pytest.mark.integration

DEADLINE = 2.0  # the real server's, for thousands of containers


SERVER = examples(150)


@pytest.fixture(scope="module")
def scene() -> Iterator[tuple[LocalWebhook, RegistryServer, PushedImage]]:
    """An upstream holding team/app:1.0, a CCR holding its copy, and the webhook over TLS with a 2 s deadline."""
    with RegistryServer() as upstream, RegistryServer() as ccr:
        for server, repository in ((upstream, "team/app"), (ccr, "up/team/app")):
            client = RegistryClient(server.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)
            image = push_sample_image(client, repository, "1.0", [512], seed=31)
        settings_ = {
            "ccr": {"registry": ccr.host, "insecure": True},
            "upstreams": [{"registry": upstream.host, "insecure": True, "prefix": "up"}],
            "webhook": {"deadlineSeconds": DEADLINE, "warmerUrl": "", "maxRequestBytes": 1024 * 1024},
        }
        with LocalWebhook(settings_, workers=1) as hook:
            yield hook, upstream, image


@pytest.fixture(scope="module")
def server(scene) -> urllib3.HTTPSConnectionPool:
    hook = scene[0]
    return urllib3.HTTPSConnectionPool(
        "127.0.0.1",
        hook.port,
        cert_reqs="CERT_REQUIRED",
        ca_certs=str(hook.ca_file),
        timeout=10,
        retries=False,
        maxsize=2,
    )


def post(server: urllib3.HTTPSConnectionPool, body: bytes, **headers: str) -> urllib3.BaseHTTPResponse:
    """POST `body` to /mutate; the reply, asserted to be no 5xx and no traceback."""
    reply = server.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json", **headers})
    assert reply.status < 500 and b"Traceback" not in reply.data, (reply.status, reply.data[:500])
    return reply


_BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda text, cut: text[:cut], st.just(deeply_nested(3)), st.integers(0, 200)),
    st.sampled_from([b"NaN", b"[]", b"null"]),
)


@SERVER
@given(st.data())
def test_the_server_answers_any_body_with_a_review_or_a_4xx(scene, server, data):
    hook, upstream, _ = scene
    review = data.draw(reviews([upstream.host, f"127.0.0.1:{hook.port}"]) | _BODIES)
    body = review if isinstance(review, bytes) else json.dumps(review).encode()
    tally.count("hostile request bodies (real server)")
    reply = post(server, body)
    try:
        parse_review(review)
    except (BadReview, AttributeError):  # AttributeError: bytes are not a review at all
        assert reply.status in (200, 400), reply.status
        return
    assert reply.status == 200, reply.data
    check_answer(review, json.loads(reply.data))


def test_thousands_of_containers_are_answered_in_time_with_a_clean_patch(scene, server):
    _, upstream, _ = scene
    images = [f"{upstream.host}/team/app:{'1.0' if i % 2 else f'missing-{i}'}" for i in range(3000)]
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "many",
            "operation": "CREATE",
            "object": {
                "kind": "Pod",
                "metadata": {"name": "many"},
                "spec": {"containers": [{"name": f"c{i}", "image": name} for i, name in enumerate(images)]},
            },
        },
    }
    started = time.monotonic()
    reply = post(server, json.dumps(review).encode())
    assert reply.status == 200 and time.monotonic() - started < deadline_ceiling(DEADLINE)
    check_answer(review, json.loads(reply.data))


@pytest.mark.parametrize(("depth", "status"), [(200, 200), (100_000, 400)])
def test_deep_nesting_is_parsed_or_refused_with_400(server, depth, status):
    reply = post(server, deeply_nested(depth))
    assert reply.status == status, reply.data[:300]


def chunked(hook: LocalWebhook, body: bytes) -> tuple[int, bytes]:
    """POST `body` in chunks with no Content-Length, as a streaming client may; the status and body."""
    connection = http.client.HTTPSConnection("127.0.0.1", hook.port, context=hook.client_ssl_context(), timeout=10)
    try:
        connection.request(
            "POST",
            "/mutate",
            body=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


@pytest.mark.parametrize(("padding", "status"), [(1000, 200), (2 * 1024 * 1024, 413)])
def test_a_chunked_body_is_read_up_to_the_limit_and_refused_past_it(scene, padding, status):
    hook = scene[0]
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "chunked", "operation": "DELETE", "padding": "x" * padding},
    }
    answered, body = chunked(hook, json.dumps(review).encode())
    assert answered == status, body[:300]
    if status == 413:
        assert b"larger than webhook.maxRequestBytes (1048576 bytes)" in body


def test_a_declared_length_past_the_limit_is_refused_before_the_body_is_read(scene):
    hook = scene[0]
    connection = http.client.HTTPSConnection("127.0.0.1", hook.port, context=hook.client_ssl_context(), timeout=10)
    try:
        connection.putrequest("POST", "/mutate")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(64 * 1024 * 1024))
        connection.endheaders(b"{")  # 1 byte of the 64 MiB announced
        reply = connection.getresponse()
        assert reply.status == 413 and b"maxRequestBytes" in reply.read()
    finally:
        connection.close()
