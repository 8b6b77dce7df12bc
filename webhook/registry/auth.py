"""Authentication to a registry: docker config.json credentials, WWW-Authenticate challenges, bearer tokens.

The flow is the distribution one. A request goes out anonymous until the registry first answers 401; its
challenge is remembered. `Basic` then sends the configured user and password with every request. `Bearer`
asks the challenge's realm for a token for the request's scopes (`repository:NAME:pull` or `pull,push`),
with Basic credentials when configured (anonymous otherwise, as Docker Hub allows for public images), or
with an identity token as an OAuth2 refresh token. Tokens are cached per scope set until `expires_in`
(60 s if unsaid or not a finite positive number, at most an hour) minus a margin, so a busy webhook asks
the token service once per repository and minute, not once per request. A token the registry refuses is
dropped and fetched again once.

The realm is chosen by the registry, so it is judged before it is asked (the client's `realm` check:
https, no IP literal or internal address unless listed), and credentials go only to a realm the
configuration trusts (the registry's own host, or one listed in `tokenHosts`). What a token service
answers in an error is redacted like a registry's: it may echo the credentials it was sent.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.registry.egress import Destination, EgressRefused
from webhook.registry.errors import (
    RegistryAuthError,
    RegistryProtocolError,
    error_for_status,
)

DEFAULT_TOKEN_SECONDS = 60.0  # the distribution token spec's default for a missing expires_in
MAX_TOKEN_SECONDS = 3600.0
_MAX_MARGIN_SECONDS = 10.0
ScopeKey = tuple[str | None, str | None, tuple[str, ...]]  # token realm, service, scopes: what a token is good for
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')

# (method, realm, headers, body, deadline, repository) -> (status, headers, body): one exchange, no redirects.
Exchange = Callable[
    [str, Destination, dict[str, str], bytes | None, float | None, str | None], tuple[int, Mapping[str, str], bytes]
]
# A realm URL -> where to send the token request, or EgressRefused.
RealmCheck = Callable[[str], Destination]


@dataclass(frozen=True)
class Challenge:
    """A parsed WWW-Authenticate challenge: scheme in lower case, and its parameters."""

    scheme: str
    params: Mapping[str, str]


def parse_challenge(header: str | None) -> Challenge | None:
    """The first challenge of a WWW-Authenticate header, or None if there is none we can read."""
    if not header or not header.strip():
        return None
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _PARAM.finditer(rest):
        quoted = match.group(2)
        params[match.group(1).lower()] = quoted.replace('\\"', '"') if quoted is not None else match.group(3)
    return Challenge(scheme.lower(), params)


@dataclass(frozen=True, repr=False)
class Credentials:
    """A user and password, or an identity token (OAuth2 refresh token), for one registry host."""

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None

    def basic_header(self) -> str | None:
        """The Authorization header for Basic auth, or None without a user and password."""
        if self.username is None or self.password is None:
            return None
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def secrets(self) -> list[str]:
        """Every string that must never show in a message, as sent and as a form or URL would quote it."""
        basic = self.basic_header()
        values = [self.password, self.identity_token, basic[len("Basic ") :] if basic else None]
        plain = [value for value in values if value]
        quoted = [quote(value, safe="") for value in plain for quote in (urllib.parse.quote, urllib.parse.quote_plus)]
        return list(dict.fromkeys(plain + quoted))

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***, identity_token=***)"


def host_of(url: str) -> str:
    """The host[:port] of an endpoint URL or of a config.json `auths` key (which may omit the scheme)."""
    if "://" not in url:
        url = "https://" + url
    return urllib.parse.urlsplit(url).netloc.lower()


def load_credentials(path: str | os.PathLike[str], endpoint: str) -> Credentials:
    """The credentials for `endpoint`'s host in a docker config.json (`auths`, keyed by host or URL)."""
    where = {"endpoint": endpoint}
    try:
        with open(path, encoding="utf-8") as handle:
            auths = json.load(handle).get("auths") or {}
    except OSError as err:
        raise RegistryAuthError(f"cannot read credentials file {path}: {err.strerror}", **where) from None
    except (ValueError, AttributeError):
        raise RegistryAuthError(
            f"credentials file {path} is not a docker config.json (JSON with `auths`)", **where
        ) from None
    host = host_of(endpoint)
    wanted = _DOCKER_HUB_HOSTS if host in _DOCKER_HUB_HOSTS else {host}
    for key, entry in auths.items():
        if host_of(key) in wanted and isinstance(entry, dict):
            return _credentials_from_entry(entry, path, key, where)
    raise RegistryAuthError(
        f"credentials file {path} has no entry for {host} (it has: {', '.join(sorted(auths)) or 'none'})", **where
    )


def _credentials_from_entry(entry: dict[str, Any], path: object, key: str, where: dict[str, Any]) -> Credentials:
    if entry.get("identitytoken"):
        return Credentials(username=entry.get("username"), identity_token=entry["identitytoken"])
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise RegistryAuthError(
                f"credentials file {path}: `auth` of {key} is not base64 of user:password", **where
            ) from None
        return Credentials(username, password)
    if entry.get("username") and entry.get("password") is not None:
        return Credentials(entry["username"], entry["password"])
    raise RegistryAuthError(
        f"credentials file {path}: entry {key} has no auth, username/password or identitytoken "
        "(credential helpers are not supported)",
        **where,
    )


class TokenCache:
    """Bearer tokens by scope set, each valid until its lifetime minus a margin; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[ScopeKey, tuple[str, float]] = {}
        self._locks: dict[ScopeKey, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: ScopeKey) -> str | None:
        """The cached token for `key`, or None if there is none or it is about to expire."""
        with self._guard:
            entry = self._tokens.get(key)
        if entry is None or self._clock() >= entry[1]:
            return None
        return entry[0]

    def put(self, key: ScopeKey, token: str, lifetime: float) -> None:
        """Remember `token` for `key` for `lifetime` seconds less a margin (a tenth, at most 10 s)."""
        margin = min(_MAX_MARGIN_SECONDS, lifetime / 10)
        with self._guard:
            self._tokens[key] = (token, self._clock() + lifetime - margin)

    def drop(self, key: ScopeKey, token: str) -> None:
        """Forget `token` for `key` (the registry refused it), unless a newer one replaced it already."""
        with self._guard:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]

    def lock(self, key: ScopeKey) -> threading.Lock:
        """A lock per key, so concurrent requests for one scope fetch one token, not one each."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def tokens(self) -> list[str]:
        """Every cached token (for redaction)."""
        with self._guard:
            return [token for token, _ in self._tokens.values()]


class Authenticator:
    """The Authorization header for each request to one registry, learning the scheme from its challenges."""

    def __init__(
        self,
        endpoint: str,
        credentials: Credentials | None,
        exchange: Exchange,
        realm: RealmCheck,
        *,
        cache: TokenCache | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
        self.cache = cache or TokenCache()
        self._exchange = exchange
        self._realm = realm
        self._challenge: Challenge | None = None

    def authorization(self, scopes: tuple[str, ...], repository: str | None, deadline: float | None) -> str | None:
        """The header to send up front: None until the registry has challenged us once."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self.credentials.basic_header() if self.credentials else None
        return "Bearer " + self._token(challenge, scopes, repository, deadline)

    def answer(
        self,
        header: str | None,
        scopes: tuple[str, ...],
        repository: str | None,
        deadline: float | None,
        refused: str | None,
    ) -> str:
        """The header to retry with after a 401 carrying `header`; `refused` is what we had sent, if anything."""
        where: dict[str, Any] = {"endpoint": self.endpoint, "repository": repository}
        challenge = parse_challenge(header)
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            raise RegistryAuthError(
                "the registry answered 401 without a Basic or Bearer challenge we can answer", **where
            )
        self._challenge = challenge
        if challenge.scheme == "basic":
            basic = self.credentials.basic_header() if self.credentials else None
            if basic is None:
                raise RegistryAuthError(
                    "the registry requires Basic credentials and none are configured for it", **where
                )
            if refused == basic:
                raise RegistryAuthError("the registry refused the configured user and password", **where)
            return basic
        if refused and refused.startswith("Bearer "):
            self.cache.drop(self._cache_key(challenge, scopes), refused[len("Bearer ") :])
        return "Bearer " + self._token(challenge, scopes, repository, deadline)

    def redact(self, text: str) -> str:
        """`text` with every credential and cached token masked."""
        secrets = (self.credentials.secrets() if self.credentials else []) + self.cache.tokens()
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    @staticmethod
    def _cache_key(challenge: Challenge, scopes: tuple[str, ...]) -> ScopeKey:
        return challenge.params.get("realm"), challenge.params.get("service"), scopes

    def _token(
        self, challenge: Challenge, scopes: tuple[str, ...], repository: str | None, deadline: float | None
    ) -> str:
        key = self._cache_key(challenge, scopes)
        token = self.cache.get(key)
        if token is not None:
            return token
        with self.cache.lock(key):
            token = self.cache.get(key)
            if token is None:
                token, lifetime = self._fetch_token(challenge, scopes, repository, deadline)
                self.cache.put(key, token, lifetime)
        return token

    def _fetch_token(
        self, challenge: Challenge, scopes: tuple[str, ...], repository: str | None, deadline: float | None
    ) -> tuple[str, float]:
        where: dict[str, Any] = {"endpoint": self.endpoint, "repository": repository}
        realm = challenge.params.get("realm", "")
        try:
            destination = self._realm(realm)
        except EgressRefused as refused:
            raise RegistryAuthError(f"refusing the registry's token realm: {refused}", **where) from None
        credentials = self.credentials
        if credentials is not None and not destination.listed:
            raise RegistryAuthError(
                f"the registry's token realm {destination.netloc} is neither the registry's own host nor listed "
                "in its tokenHosts; refusing to send it the configured credentials (list it in tokenHosts if it "
                "is the registry's token service)",
                **where,
            )
        parts = urllib.parse.urlsplit(realm)
        service = challenge.params.get("service")
        headers = {"Accept": "application/json"}
        if credentials is not None and credentials.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "client_id": "ccr-webhook",
                "scope": " ".join(scopes),
                **({"service": service} if service else {}),
            }
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            method, body = "POST", urllib.parse.urlencode(form).encode()
        else:
            query = ([("service", service)] if service else []) + [("scope", scope) for scope in scopes]
            url = realm + ("&" if parts.query else "?") + urllib.parse.urlencode(query)
            destination = dataclasses.replace(destination, url=url)
            method, body = "GET", None
            basic = credentials.basic_header() if credentials else None
            if basic:
                headers["Authorization"] = basic
        status, answer_headers, answer = self._exchange(method, destination, headers, body, deadline, repository)
        what = f"token request to {destination.netloc} for {' '.join(scopes)}"
        if status != 200:
            error = error_for_status(status, answer_headers, answer, what, **where, redact=self.redact)
            if status in (401, 403):
                who = (
                    "the configured credentials" if credentials else "an anonymous request (no credentials configured)"
                )
                error = RegistryAuthError(f"{what}: the token service refused {who}, HTTP {status}", **where)
            raise error
        return _parse_token(answer, what, where)


def _parse_token(body: bytes, what: str, where: dict[str, Any]) -> tuple[str, float]:
    try:
        document = json.loads(body)
        token = document.get("token") or document.get("access_token")
        expires_in = document.get("expires_in")
    except (ValueError, AttributeError):
        raise RegistryProtocolError(
            f"{what}: the token service answered something that is not a token document", **where
        ) from None
    if not isinstance(token, str) or not token:
        raise RegistryProtocolError(f"{what}: the token service answered without a token", **where)
    return token, token_lifetime(expires_in)


def token_lifetime(expires_in: object) -> float:
    """Seconds to keep a token: `expires_in` if it is a finite positive number, else the default; at most an hour."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
        return DEFAULT_TOKEN_SECONDS
    if not math.isfinite(expires_in) or expires_in <= 0:
        return DEFAULT_TOKEN_SECONDS
    return min(max(float(expires_in), 1.0), MAX_TOKEN_SECONDS)
