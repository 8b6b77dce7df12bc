"""Registries and token services that mean harm (issue 13, items 2, 6, 7 and 12).

* Where a registry can send the webhook and the warmer: blob redirects and token realms are judged after DNS,
  never an internal address in any spelling, credentials only to trusted realms.
* One that trickles bytes must not hold a lookup past its total deadline nor starve the other upstreams.
* One that echoes credentials or states odd token lifetimes must not make a secret leak or a token live forever.

Real parts throughout: distribution registries (token auth trusting tests/support/token_issuer.py, made
hostile), `ccr-webhook serve` under gunicorn over TLS, `ccr-webhook warm`. The hostile registry is a
RegistryProxy in front of a real registry answering the redirect or Bearer challenge a test chooses, or
tests/support/faulty_servers.py's TricklingServer; baits are listeners standing where the hostile registry
points, that must get no connection. Names that resolve to internal addresses come from a fake resolver
passed to the client (no DNS); where a test needs a name that resolves to a *public* address and still
connects on loopback, it lets 127.0.0.1 count as public for that test only (`loopback_counts_as_public`).
"""

from __future__ import annotations

import base64
import json
import math
import ssl
import time
import traceback
import urllib.parse
from collections.abc import Iterator

import pytest
import urllib3
import yaml

from tests.support.fake_resolver import FakeResolver
from tests.support.faulty_servers import Bait, TricklingServer
from tests.support.registry_auth import token_auth
from tests.support.registry_proxy import RegistryProxy
from tests.support.token_issuer import TokenIssuer
from tests.support.waiting import wait_until
from webhook import tls
from webhook.cli import main
from webhook.registry import egress
from webhook.registry.client import (
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryProtocolError,
    RegistryUnavailable,
    digest_of,
)
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image
from webhook.testing.webhook_process import LocalWebhook

pytestmark = pytest.mark.integration

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


@pytest.fixture(scope="module")
def open_registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture
def loopback_counts_as_public(monkeypatch):
    """Let 127.0.0.1 stand in for a public address, so a judged name can be connected to on loopback."""
    judge = egress.is_internal
    monkeypatch.setattr(egress, "is_internal", lambda address: address != "127.0.0.1" and judge(address))


# -- a hostile registry and its baits --------------------------------------------------------------------


@pytest.fixture
def hostile(open_registry) -> Iterator[RegistryProxy]:
    proxy = RegistryProxy(open_registry.host).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def baits() -> Iterator[dict[str, Bait]]:
    found = {"127.0.0.1": Bait(), "127.0.0.2": Bait("127.0.0.2")}
    yield found
    for bait in found.values():
        bait.close()


# (host as the remote side writes it, the bait it would reach)
POINTED = [
    ("localhost", "127.0.0.1"),  # a name that resolves to loopback (from /etc/hosts, no DNS)
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("127.000.000.001", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("127.0.0.2", "127.0.0.2"),
    ("[::ffff:127.0.0.1]", "127.0.0.1"),
]


@pytest.mark.parametrize(("host", "bait_address"), POINTED)
def test_a_blob_redirect_to_an_internal_address_in_any_form_never_connects(
    open_registry, hostile, baits, host, bait_address
):
    data = b"redirected" * 100
    make_client(open_registry.url).upload_blob("egress/app", digest_of(data), len(data), [data])
    bait = baits[bait_address]
    hostile.redirect_blobs_to = f"http://{host}:{bait.port}"
    with pytest.raises(RegistryProtocolError, match="refusing a redirect to"):
        make_client(hostile.url).open_blob("egress/app", digest_of(data))
    assert bait.connections() == 0


@pytest.mark.parametrize(("host", "bait_address"), POINTED)
def test_a_token_realm_at_an_internal_address_in_any_form_never_connects(hostile, baits, host, bait_address):
    bait = baits[bait_address]
    hostile.faults.append((401, {"WWW-Authenticate": f'Bearer realm="http://{host}:{bait.port}/token",service="r"'}))
    with pytest.raises(RegistryAuthError, match="refusing the registry's token realm"):
        make_client(hostile.url).resolve_digest("egress/app", "v1")
    assert bait.connections() == 0


def test_a_name_resolving_to_the_metadata_address_is_refused_for_redirects_and_realms(hostile, open_registry):
    resolver = FakeResolver({"metadata.example": ["169.254.169.254"]})
    client = make_client(hostile.url, resolve=resolver)
    data = b"metadata"
    make_client(open_registry.url).upload_blob("egress/meta", digest_of(data), len(data), [data])
    hostile.redirect_blobs_to = "http://metadata.example"
    with pytest.raises(RegistryProtocolError, match=r"metadata\.example, which resolves to the internal address"):
        client.open_blob("egress/meta", digest_of(data))
    hostile.faults.append((401, {"WWW-Authenticate": 'Bearer realm="http://metadata.example/latest/meta-data"'}))
    with pytest.raises(RegistryAuthError, match=r"metadata\.example, which resolves to the internal address"):
        client.resolve_digest("egress/meta", "v1")
    assert resolver.asked == ["metadata.example", "metadata.example"]  # once per decision, never again to connect


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, object]:
    """A test CA, and server contexts with certificates for 127.0.0.1 and for the name storage.example only."""
    workdir = tmp_path_factory.mktemp("egress-tls")
    ca = tls.generate_ca("egress test CA")
    (workdir / "ca.crt").write_bytes(ca.cert_pem)
    contexts = {}
    for name, dns, ips in (("loopback", [], ["127.0.0.1"]), ("storage", ["storage.example"], [])):
        tls.issue_serving_cert(ca, dns, ips).write(workdir / f"{name}.crt", workdir / f"{name}.key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(workdir / f"{name}.crt", workdir / f"{name}.key")
        contexts[name] = context
    return {"ca_file": str(workdir / "ca.crt"), **contexts}


@pytest.mark.parametrize("realm", ["http://127.0.0.1:{port}/token", "http://registry.example:{port}/token"])
def test_a_plain_http_realm_is_refused_for_an_https_registry_even_on_its_own_host(
    open_registry, certificates, baits, realm
):
    bait = baits["127.0.0.1"]
    hostile = RegistryProxy(open_registry.host, tls=certificates["loopback"]).start()
    try:
        assert hostile.url.startswith("https://127.0.0.1:")
        challenge = f'Bearer realm="{realm.format(port=bait.port)}"'
        hostile.faults.append((401, {"WWW-Authenticate": challenge}))
        client = make_client(hostile.url, insecure=False, ca_file=certificates["ca_file"])
        with pytest.raises(RegistryAuthError, match=r"token realm: http://.* \(https only\)"):
            client.resolve_digest("egress/app", "v1")
        assert bait.connections() == 0 and len(hostile.requests) == 1
    finally:
        hostile.stop()


def test_a_judged_redirect_connects_to_the_checked_address_with_the_name_for_host_and_tls(
    open_registry, hostile, certificates, loopback_counts_as_public
):
    data = b"pinned" * 1000
    make_client(open_registry.url).upload_blob("egress/pinned", digest_of(data), len(data), [data])
    storage = RegistryProxy(open_registry.host, name="storage.example", tls=certificates["storage"]).start()
    try:
        resolver = FakeResolver({"storage.example": ["127.0.0.1"]})  # asked again, it would answer 10.66.66.66
        hostile.redirect_blobs_to = storage.url
        client = make_client(hostile.url, ca_file=certificates["ca_file"], resolve=resolver)
        with client.open_blob("egress/pinned", digest_of(data)) as stream:
            assert b"".join(stream) == data  # the certificate names storage.example only: verified by the name
        assert resolver.asked == ["storage.example"]
        assert storage.hosts == [f"storage.example:{storage.port}"]
    finally:
        storage.stop()


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


@pytest.mark.parametrize("stated", [math.nan, math.inf, -5, 0, 1e308, "forever", "300"])
def test_a_token_service_stating_an_odd_expires_in_still_serves_lookups(
    tmp_path, token_registry, hostile_issuer, pushed, stated
):
    hostile_issuer.answered_expires_in = stated
    client = make_client(token_registry.url, credentials=docker_config(tmp_path / "c.json", token_registry.host))
    assert client.resolve_digest("hostile/app", "1.0", timeout=10) == pushed


# -- credentials go to trusted realms only -------------------------------------------------------------


@pytest.fixture
def elsewhere_realm(token_registry, issuer, pushed) -> Iterator[RegistryProxy]:
    """A registry whose first challenge names a realm on another host, auth.example (the issuer, on loopback)."""
    proxy = RegistryProxy(token_registry.host).start()
    challenge = f'Bearer realm="http://auth.example:{issuer.port}/token",service="{issuer.service}"'
    proxy.faults.append((401, {"WWW-Authenticate": challenge}))
    issuer.requests.clear()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize(
    ("credentials", "token_hosts", "outcome"),
    [
        (False, None, None),  # no credentials: a realm elsewhere may be asked, anonymously, by its checked address
        (True, None, "neither the registry's own host nor listed in its tokenHosts"),
        (True, ("auth.example",), USER),  # listed: the credentials go there
        (True, ("*.other.example",), "auth.example, which is not in this registry's tokenHosts"),
    ],
)
def test_credentials_go_only_to_a_realm_on_the_registry_host_or_listed_in_token_hosts(
    tmp_path, issuer, pushed, elsewhere_realm, loopback_counts_as_public, credentials, token_hosts, outcome
):
    config = docker_config(tmp_path / "config.json", elsewhere_realm.url.removeprefix("http://"))
    resolver = FakeResolver({"auth.example": ["127.0.0.1"]})
    client = make_client(
        elsewhere_realm.url, credentials=config if credentials else None, token_hosts=token_hosts, resolve=resolver
    )
    if outcome in (None, USER):
        assert client.resolve_digest("hostile/app", "1.0") == pushed
        assert [(request.user, request.granted) for request in issuer.requests] == [(outcome, True)]
        assert resolver.asked == ["auth.example"]
        return
    with pytest.raises(RegistryAuthError, match=outcome):
        client.resolve_digest("hostile/app", "1.0")
    assert issuer.requests == []  # the realm was never asked


# -- token services that echo credentials ----------------------------------------------------------------


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


@pytest.mark.parametrize("over_tls", [False, True], ids=["http", "https"])
def test_a_lookup_has_a_total_deadline_however_slowly_the_registry_sends(certificates, over_tls):
    trickler = TricklingServer(interval=0.05, seconds=20, tls=certificates["loopback"] if over_tls else None)
    client = make_client(trickler.url, read_timeout=0.5, ca_file=certificates["ca_file"])  # bytes come within 0.5 s
    try:
        for lookup in (
            lambda: client.resolve_digest("any/app", "1.0", timeout=1.0),
            lambda: client.has_manifest("any/app", "sha256:" + "a" * 64, timeout=1.0),
        ):
            started = time.monotonic()
            with pytest.raises(RegistryUnavailable, match="no complete answer before the deadline"):
                lookup()
            assert time.monotonic() - started < 2.0
        wait_until(lambda: trickler.abandoned == 2, what="both trickling answers abandoned by the client")
    finally:
        trickler.close()


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
