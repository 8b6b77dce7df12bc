"""The egress rules on their own (webhook/registry/egress.py): which URLs a registry may send us to, judged after
name resolution, with a fake resolver (no DNS). The same rules against a hostile registry: test_registry_hostile.py."""

from __future__ import annotations

import re
import socket

import pytest

from tests.support.fake_resolver import FakeResolver
from webhook.registry.egress import EgressRefused, check_destination

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
