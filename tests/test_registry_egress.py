"""Where a registry can send the webhook and the warmer: blob redirects and token realms, judged after DNS.

The hostile registry is a RegistryProxy in front of a real distribution registry, answering the redirect or
the Bearer challenge a test chooses; baits are listeners standing where the hostile registry points, that
must get no connection. Names that resolve to internal addresses come from a fake resolver passed to the
client (no DNS); where a test needs a name that resolves to a *public* address and still connects on
loopback, it lets 127.0.0.1 count as public for that test only (`loopback_counts_as_public`).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.support.faulty_servers import Bait
from tests.support.registry_auth import token_auth
from tests.support.registry_proxy import RegistryProxy
from tests.support.token_issuer import TokenIssuer
from webhook import tls
from webhook.registry import egress
from webhook.registry.client import RegistryAuthError, RegistryClient, RegistryProtocolError, digest_of
from webhook.registry.egress import EgressRefused, check_destination
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

USER, PASSWORD = "alice", "realm-pa55-never-sent"


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


def make_client(url: str, **overrides: object) -> RegistryClient:
    options = {"insecure": True, "connect_timeout": 1.0, "read_timeout": 5.0, "max_connections": 4, **overrides}
    return RegistryClient(url, **options)  # type: ignore[arg-type]


@pytest.fixture
def loopback_counts_as_public(monkeypatch):
    """Let 127.0.0.1 stand in for a public address, so a judged name can be connected to on loopback."""
    judge = egress.is_internal
    monkeypatch.setattr(egress, "is_internal", lambda address: address != "127.0.0.1" and judge(address))


# -- the rules, on their own -----------------------------------------------------------------------------

LITERALS = [
    "2130706433",  # 127.0.0.1 in decimal
    "0x7f000001",
    "127.000.000.001",
    "017700000001",  # octal
    "0177.0.0.1",
    "127.1",
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::1]",
    "169.254.169.254",
    "8.8.8.8",  # public, but a literal all the same
]


@pytest.mark.parametrize("host", LITERALS)
def test_ip_literals_in_any_spelling_are_refused_unless_listed(host):
    resolver = FakeResolver({})
    with pytest.raises(EgressRefused, match=re.escape(f"the IP address {host}")):
        check_destination(f"http://{host}:5000/x", insecure=True, listed=None, key="redirectHosts", resolve=resolver)
    assert resolver.asked == []
    listed = check_destination(
        f"http://{host}:5000/x", insecure=True, listed=(host,), key="redirectHosts", resolve=socket.getaddrinfo
    )
    assert listed.listed and listed.addresses  # a literal resolves to itself, with no DNS


INTERNAL = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.5.4",
    "192.168.0.10",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.251",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fd00::5",
    "ff02::1",
    "::ffff:10.0.0.1",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
]


@pytest.mark.parametrize("address", INTERNAL)
def test_a_name_resolving_to_any_internal_address_is_refused(address):
    resolver = FakeResolver({"storage.example": ["93.184.216.34", address]})
    with pytest.raises(EgressRefused, match=f"storage.example, which resolves to the internal address {address}"):
        check_destination(
            "https://storage.example/blob", insecure=False, listed=None, key="redirectHosts", resolve=resolver
        )


def test_a_name_resolving_to_public_addresses_is_resolved_once_and_pinned_to_them():
    resolver = FakeResolver({"storage.example": ["93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"]})
    found = check_destination(
        "https://Storage.Example:8443/v2/blob?sig=1", insecure=False, listed=None, key="tokenHosts", resolve=resolver
    )
    assert found.addresses == ("93.184.216.34", "2606:2800:220:1::1") and not found.listed
    assert (found.netloc, found.request_uri) == ("storage.example:8443", "/v2/blob?sig=1")
    assert resolver.asked == ["storage.example"]


@pytest.mark.parametrize(
    ("url", "insecure", "listed", "reason"),
    [
        ("http://storage.example/x", False, None, r"http://storage.example \(https only\)"),
        ("ftp://storage.example/x", True, None, "https only"),
        ("https://user:pw@storage.example/x", False, None, "a URL with user info"),
        ("https://storage.example/x", False, ("*.s3.amazonaws.com",), "not in this registry's tokenHosts"),
        ("https://nowhere.example/x", False, None, "does not resolve"),
    ],
)
def test_scheme_user_info_lists_and_unresolvable_names_are_refused(url, insecure, listed, reason):
    resolver = FakeResolver({"storage.example": ["93.184.216.34"]})
    with pytest.raises(EgressRefused, match=reason):
        check_destination(url, insecure=insecure, listed=listed, key="tokenHosts", resolve=resolver)


# -- a hostile registry and its baits --------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


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


@pytest.mark.integration
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


@pytest.mark.integration
@pytest.mark.parametrize(("host", "bait_address"), POINTED)
def test_a_token_realm_at_an_internal_address_in_any_form_never_connects(hostile, baits, host, bait_address):
    bait = baits[bait_address]
    hostile.faults.append((401, {"WWW-Authenticate": f'Bearer realm="http://{host}:{bait.port}/token",service="r"'}))
    with pytest.raises(RegistryAuthError, match="refusing the registry's token realm"):
        make_client(hostile.url).resolve_digest("egress/app", "v1")
    assert bait.connections() == 0


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


# -- credentials go to trusted realms only ---------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    issuer = TokenIssuer({USER: PASSWORD}).start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, issuer) -> Iterator[RegistryServer]:
    with RegistryServer(auth=token_auth(tmp_path_factory.mktemp("realm"), issuer)) as server:
        yield server


def docker_config(path, host: str) -> str:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return str(path)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, token_registry) -> str:
    """The digest of realm/app:v1, pushed with credentials (the realm on the registry's own host: trusted)."""
    config = docker_config(tmp_path_factory.mktemp("writer") / "config.json", token_registry.host)
    return push_sample_image(
        make_client(token_registry.url, credentials=config), "realm/app", "v1", [100], seed=3
    ).digest


@pytest.fixture
def elsewhere_realm(token_registry, issuer, pushed) -> Iterator[RegistryProxy]:
    """A registry whose first challenge names a realm on another host, auth.example (the issuer, on loopback)."""
    proxy = RegistryProxy(token_registry.host).start()
    challenge = f'Bearer realm="http://auth.example:{issuer.port}/token",service="{issuer.service}"'
    proxy.faults.append((401, {"WWW-Authenticate": challenge}))
    issuer.requests.clear()
    yield proxy
    proxy.stop()


@pytest.mark.integration
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
        assert client.resolve_digest("realm/app", "v1") == pushed
        assert [(request.user, request.granted) for request in issuer.requests] == [(outcome, True)]
        assert resolver.asked == ["auth.example"]
        return
    with pytest.raises(RegistryAuthError, match=outcome):
        client.resolve_digest("realm/app", "v1")
    assert issuer.requests == []  # the realm was never asked
