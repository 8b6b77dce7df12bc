"""Where a remote side may send us: the check of a URL that a registry chose (a blob redirect, a token realm).

A configured registry is contacted as configured. A URL the remote side chose is judged here, after DNS:
https only (http too for an insecure registry), no user info, and then either its host is listed by the
operator (names or globs, or the registry's own host) or, with no list, it must be a name (no IP literal
in any spelling: `2130706434`, `0x7f000001`, `127.000.000.001`, `[::ffff:127.0.0.1]`) that resolves to
public addresses only (no loopback, private, link-local, metadata, unspecified, multicast or reserved).
The name is resolved once and the caller connects to the resolved addresses (`Destination.addresses`),
keeping the name for Host and TLS, so a second lookup cannot be rebound to an internal address.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webhook.errors import CCRWebhookError

# socket.getaddrinfo's shape; tests pass a fake to make names resolve where they want, without DNS.
Resolve = Callable[..., list[tuple[Any, ...]]]
MAX_ADDRESSES = 8
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class EgressRefused(CCRWebhookError):
    """A URL chosen by the remote side that configuration does not let us contact; the message says why."""


@dataclass(frozen=True)
class Destination:
    """A checked URL: `addresses` to connect to in turn (empty: the configured registry's own host, by name)."""

    url: str
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    addresses: tuple[str, ...] = ()
    listed: bool = False  # the operator listed this host, or it is the configured registry's own

    @property
    def netloc(self) -> str:
        """host[:port] as a Host header carries it."""
        named = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return named if self.port == default else f"{named}:{self.port}"

    @property
    def request_uri(self) -> str:
        """Path and query, as sent on the request line."""
        parts = urllib.parse.urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def check_destination(
    url: str,
    *,
    insecure: bool,
    listed: tuple[str, ...] | None,
    key: str,
    trusted_host: str | None = None,
    resolve: Resolve = socket.getaddrinfo,
) -> Destination:
    """Judge `url` (chosen by the remote side) or raise EgressRefused; `key` names the list in messages.

    `listed` is the configured names or globs, resolved but not judged (None: any name that resolves to
    public addresses); `trusted_host` is a host configuration already trusts (the registry's own).
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and insecure):
        raise EgressRefused(f"{scheme or '?'}://{parts.netloc.rpartition('@')[2]} (https only)")
    if parts.username is not None or parts.password is not None:
        raise EgressRefused("a URL with user info")
    host = (parts.hostname or "").lower()
    if not host:
        raise EgressRefused("a URL without a host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise EgressRefused(f"{host} with an invalid port") from None
    named = f"[{host}]" if ":" in host else host
    if host == trusted_host:
        return Destination(url, scheme, host, port, listed=True)
    is_listed = listed is not None and any(_matches(named, pattern) for pattern in listed)
    if listed is not None and not is_listed:
        raise EgressRefused(f"{named}, which is not in this registry's {key}")
    if not is_listed and is_address_literal(host):
        raise EgressRefused(f"the IP address {named}; list it in {key} to allow it")
    try:
        found = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        raise EgressRefused(f"{named}, which does not resolve ({type(err).__name__})") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in found))
    if not addresses:
        raise EgressRefused(f"{named}, which resolves to no address")
    for address in addresses if not is_listed else ():
        if is_internal(address):
            raise EgressRefused(f"{named}, which resolves to the internal address {address}; list it in {key}")
    return Destination(url, scheme, host, port, addresses[:MAX_ADDRESSES], listed=is_listed)


def _matches(named: str, pattern: str) -> bool:
    """Whether host `named` matches a listed name or glob; `[v6]` is literal (fnmatch would read a class)."""
    return named == pattern or (not pattern.startswith("[") and fnmatch.fnmatchcase(named, pattern))


def is_address_literal(host: str) -> bool:
    """Whether `host` is an IP address in any spelling the C resolver accepts (decimal, hex, octal, short forms)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except (OSError, UnicodeError, ValueError):
        return False
    return True


def is_internal(address: str) -> bool:
    """Whether an address is anything but a public unicast one, judging an IPv4 address embedded in IPv6 as itself."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified
