"""Registries and token services that mean harm: one that trickles bytes must not hold the webhook past a total
deadline nor starve the other upstreams, and one that echoes credentials or states odd token lifetimes must not
make a secret leak or a token live forever.

Real parts throughout: distribution registries (token auth trusting tests/support/token_issuer.py, made
hostile), `ccr-webhook serve` under gunicorn over TLS, `ccr-webhook warm`; the trickling server is
tests/support/faulty_servers.py's TricklingServer.
"""

from __future__ import annotations

import base64
import json
import math
import time
import traceback
import urllib.parse
from collections.abc import Iterator

import pytest
import urllib3
import yaml

from tests.support.faulty_servers import TricklingServer
from tests.support.registry_auth import token_auth
from tests.support.registry_proxy import RegistryProxy
from tests.support.token_issuer import TokenIssuer
from tests.support.waiting import wait_until
from webhook.cli import main
from webhook.registry.auth import MAX_TOKEN_SECONDS, Authenticator, TokenCache, token_lifetime
from webhook.registry.client import RegistryClient, RegistryError, RegistryUnavailable
from webhook.registry.egress import check_destination
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image
from webhook.testing.webhook_process import LocalWebhook

USER = "alice"
PASSWORD = 'pa55 "w0rd"+/with\\escapes'  # JSON-escaped and URL-encoded, it looks different from the raw form
REFRESH_TOKEN = "refresh+token/never=shown"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = [  # as sent, and as an echo may write them: URL-encoded (a form, a query) or JSON-escaped
    *(form(secret) for secret in (PASSWORD, REFRESH_TOKEN, BASIC) for form in (str, urllib.parse.quote_plus)),
    urllib.parse.quote(PASSWORD, safe=""),
    json.dumps(PASSWORD)[1:-1],
]


def make_client(url: str, **overrides: object) -> RegistryClient:
    options = {"insecure": True, "connect_timeout": 1.0, "read_timeout": 5.0, "max_connections": 4, **overrides}
    return RegistryClient(url, **options)  # type: ignore[arg-type]


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a credential shows in the {where}: {text[:500]}"


# -- token lifetimes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (300, 300.0),
        (None, 60.0),
        (0, 60.0),
        (-5, 60.0),
        (math.nan, 60.0),
        (math.inf, 60.0),
        (-math.inf, 60.0),
        ("inf", 60.0),
        ("300", 60.0),
        (True, 60.0),
        ([300], 60.0),
        (1e308, MAX_TOKEN_SECONDS),
        (0.2, 1.0),
    ],
)
def test_a_token_lifetime_that_is_not_a_finite_positive_number_is_the_default_and_every_one_is_capped(
    expires_in, lifetime
):
    assert token_lifetime(expires_in) == lifetime


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("stated", ["NaN", "Infinity", "1e999", '"forever"', "-1", "1e308"])
def test_a_token_stating_an_odd_lifetime_is_fetched_again_within_the_cap(stated):
    clock, fetched = Clock(), []

    def exchange(method, destination, headers, body, deadline, repository):
        fetched.append(clock.now)
        return 200, {}, f'{{"token": "t{len(fetched)}", "expires_in": {stated}}}'.encode()

    def realm(url):
        return check_destination(url, insecure=True, listed=None, key="tokenHosts", trusted_host="r")

    authenticator = Authenticator("http://r", None, exchange, realm, cache=TokenCache(clock))
    challenge = 'Bearer realm="http://r/token",service="r"'
    assert authenticator.answer(challenge, ("repository:a:pull",), "a", None, None) == "Bearer t1"
    clock.now += MAX_TOKEN_SECONDS + 1  # never kept forever: by the cap at the latest
    assert authenticator.authorization(("repository:a:pull",), "a", None) == "Bearer t2"
    assert len(fetched) == 2


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    issuer = TokenIssuer({USER: PASSWORD}, refresh_tokens={REFRESH_TOKEN: USER}).start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, issuer) -> Iterator[RegistryServer]:
    with RegistryServer(auth=token_auth(tmp_path_factory.mktemp("hostile-token"), issuer)) as server:
        yield server


def docker_config(path, host: str, identity: bool = False) -> str:
    entry = {"identitytoken": REFRESH_TOKEN, "username": "<token>"} if identity else {"auth": BASIC}
    path.write_text(json.dumps({"auths": {host: entry}}))
    return str(path)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, token_registry) -> str:
    config = docker_config(tmp_path_factory.mktemp("pusher") / "config.json", token_registry.host)
    client = make_client(token_registry.url, credentials=config)
    return push_sample_image(client, "hostile/app", "1.0", [300], seed=5).digest


@pytest.fixture
def hostile_issuer(issuer) -> Iterator[TokenIssuer]:
    yield issuer
    issuer.echo_status = issuer.answered_expires_in = None


@pytest.mark.integration
@pytest.mark.parametrize("stated", [math.nan, math.inf, -5, 0, 1e308, "forever", "300"])
def test_a_token_service_stating_an_odd_expires_in_still_serves_lookups(
    tmp_path, token_registry, hostile_issuer, pushed, stated
):
    hostile_issuer.answered_expires_in = stated
    client = make_client(token_registry.url, credentials=docker_config(tmp_path / "c.json", token_registry.host))
    assert client.resolve_digest("hostile/app", "1.0", timeout=10) == pushed


# -- token services that echo credentials ----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("status", [400, 500])
@pytest.mark.parametrize("identity", [False, True], ids=["basic", "refresh token"])
def test_credentials_echoed_by_a_token_service_never_reach_the_error(
    tmp_path, token_registry, hostile_issuer, status, identity
):
    hostile_issuer.echo_status = status
    config = docker_config(tmp_path / "c.json", token_registry.host, identity=identity)
    with pytest.raises(RegistryError) as raised:
        make_client(token_registry.url, credentials=config).resolve_digest("hostile/app", "1.0", timeout=10)
    text = "".join(traceback.format_exception(raised.value))
    assert f"HTTP {status} (DENIED: bad request" in text  # what the service said is kept, masked
    assert "***" in text
    assert_no_secret(text, "error")


@pytest.mark.integration
def test_credentials_echoed_by_a_token_service_reach_no_log_warning_or_warm_output(
    tmp_path, token_registry, hostile_issuer, pushed, capsys
):
    config = docker_config(tmp_path / "c.json", token_registry.host)
    settings = {
        "ccr": {"registry": "ccr.local:5000", "endpoint": token_registry.url, "insecure": True},
        "upstreams": [{"registry": token_registry.host, "insecure": True, "prefix": "up", "credentials": config}],
        "resolver": {"negativeCacheSeconds": 0},
        "webhook": {"warmerUrl": ""},
    }
    hostile_issuer.echo_status = 400
    image = f"{token_registry.host}/hostile/app:1.0"
    with LocalWebhook(settings, workers=1, serve_args=["--log-level", "debug"]) as hook:
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "echo",
                "operation": "CREATE",
                "object": {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": image}]}},
            },
        }
        https = urllib3.HTTPSConnectionPool(
            "127.0.0.1", hook.port, cert_reqs="CERT_REQUIRED", ca_certs=str(hook.ca_file), timeout=10, retries=False
        )
        reply = https.request("POST", "/mutate", body=json.dumps(review), headers={"Content-Type": "application/json"})
        answer = reply.data.decode()
        metrics = https.request("GET", "/metrics").data.decode()
        log = hook.log()
    assert "HTTP 400 (DENIED: bad request" in answer  # the warning says what the token service said, masked
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    assert main(["warm", "--config", str(config_file), image]) == 1
    output = capsys.readouterr()
    assert "HTTP 400" in output.out + output.err
    for where, text in (
        ("admission answer", answer),
        ("webhook log", log),
        ("metrics", metrics),
        ("warm output", output.out + output.err),
    ):
        assert_no_secret(text, where)


# -- trickling registries --------------------------------------------------------------------------------


@pytest.fixture
def trickler() -> Iterator[TricklingServer]:
    server = TricklingServer(interval=0.05, seconds=20)
    yield server
    server.close()


@pytest.mark.integration
def test_a_lookup_has_a_total_deadline_however_slowly_the_registry_sends(trickler):
    client = make_client(f"http://{trickler.host}", read_timeout=0.5)  # every byte comes well within 0.5 s
    for lookup in (
        lambda: client.resolve_digest("any/app", "1.0", timeout=1.0),
        lambda: client.has_manifest("any/app", "sha256:" + "a" * 64, timeout=1.0),
    ):
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="no complete answer before the deadline"):
            lookup()
        assert time.monotonic() - started < 2.0
    wait_until(lambda: trickler.abandoned == 2, what="both trickling answers abandoned by the client")


@pytest.mark.integration
def test_a_trickling_token_service_is_bounded_by_the_same_deadline(open_registry, trickler):
    front = RegistryProxy(open_registry.host).start()
    try:
        front.faults.append((401, {"WWW-Authenticate": f'Bearer realm="http://{trickler.host}/token"'}))
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="token request: no complete answer before the deadline"):
            make_client(front.url, read_timeout=0.5).resolve_digest("any/app", "1.0", timeout=1.0)
        assert time.monotonic() - started < 2.0
    finally:
        front.stop()


@pytest.fixture(scope="module")
def open_registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


DEADLINE = 1.5


def review(uid: str, images: list[str]) -> bytes:
    containers = [{"name": f"c{index}", "image": image} for index, image in enumerate(images)]
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "operation": "CREATE",
                "object": {"kind": "Pod", "spec": {"containers": containers}},
            },
        }
    ).encode()


@pytest.mark.integration
def test_a_trickling_upstream_does_not_starve_a_healthy_one(open_registry, trickler):
    healthy = make_client(open_registry.url)
    digest = push_sample_image(healthy, "team/app", "1.0", [400], seed=7).digest
    with RegistryServer() as ccr:
        settings = {
            "ccr": {"registry": ccr.host, "insecure": True},
            "upstreams": [
                {"registry": open_registry.host, "insecure": True, "prefix": "healthy"},
                {"registry": trickler.host, "insecure": True, "prefix": "trickling"},
            ],
            "resolver": {"maxConcurrency": 4, "readTimeoutSeconds": 0.5, "lookupTimeoutSeconds": 4},
            "webhook": {"deadlineSeconds": DEADLINE, "warmerUrl": ""},
        }
        with LocalWebhook(settings, workers=1) as hook:
            https = urllib3.HTTPSConnectionPool(
                "127.0.0.1", hook.port, cert_reqs="CERT_REQUIRED", ca_certs=str(hook.ca_file), timeout=10, retries=False
            )

            def answer(uid: str, images: list[str]) -> dict:
                started = time.monotonic()
                reply = https.request(
                    "POST", "/mutate", body=review(uid, images), headers={"Content-Type": "application/json"}
                )
                assert reply.status == 200 and time.monotonic() - started < DEADLINE + 0.5, reply.data[:300]
                return json.loads(reply.data)["response"]

            # a Pod naming eight tags of the trickling upstream: more lookups than the resolver has threads
            answer("flood", [f"{trickler.host}/team/slow:{index}" for index in range(8)])
            wait_until(lambda: trickler.accepted >= 2, what="the trickling upstream's lookups under way")
            both = answer("both", [f"{trickler.host}/team/slow:9", f"{open_registry.host}/team/app:1.0"])
            ops = json.loads(base64.b64decode(both["patch"])) if "patch" in both else []
            assert any(op["path"] == "/spec/containers/1/image" and digest in op["value"] for op in ops), both
            # the trickling lookups end at lookupTimeoutSeconds, giving their threads back
            wait_until(lambda: trickler.abandoned >= 2, timeout=15, what="the trickling lookups cut at their deadline")
