"""Pure tests of the registry client's authentication pieces and error messages: no servers."""

from __future__ import annotations

import base64
import json
import math

import pytest

from webhook.registry.auth import (
    MAX_TOKEN_SECONDS,
    Authenticator,
    Credentials,
    TokenCache,
    load_credentials,
    parse_challenge,
    token_lifetime,
)
from webhook.registry.egress import check_destination
from webhook.registry.errors import (
    NotFound,
    RateLimited,
    RegistryAuthError,
    RegistryProtocolError,
    RegistryServerError,
    RegistryUnavailable,
    error_for_status,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/nginx:pull",
            },
        ),
        ('Basic realm="ccr-tests"', "basic", {"realm": "ccr-tests"}),
        ("bearer realm=https://r.example/t, service=svc", "bearer", {"realm": "https://r.example/t", "service": "svc"}),
        (
            'Bearer realm="https://r/t",error="insufficient_scope"',
            "bearer",
            {"realm": "https://r/t", "error": "insufficient_scope"},
        ),
    ],
)
def test_challenges_are_parsed(header, scheme, params):
    challenge = parse_challenge(header)
    assert challenge is not None and challenge.scheme == scheme and dict(challenge.params) == params


@pytest.mark.parametrize("header", [None, "", "   "])
def test_an_empty_challenge_is_none(header):
    assert parse_challenge(header) is None


def test_token_cache_expires_tokens_before_their_lifetime_ends():
    now = [1000.0]
    cache = TokenCache(clock=lambda: now[0])
    cache.put(("realm", "svc", ("a",)), "short", 60)  # margin: a tenth, 6 s
    cache.put(("realm", "svc", ("b",)), "long", 3600)  # margin capped at 10 s
    now[0] += 53.9
    assert cache.get(("realm", "svc", ("a",))) == "short"
    now[0] += 0.2
    assert cache.get(("realm", "svc", ("a",))) is None
    now[0] = 1000 + 3589.9
    assert cache.get(("realm", "svc", ("b",))) == "long"
    now[0] += 0.2
    assert cache.get(("realm", "svc", ("b",))) is None


def test_token_cache_drops_only_the_refused_token():
    cache = TokenCache()
    cache.put(("k",), "old", 300)
    cache.put(("k",), "new", 300)
    cache.drop(("k",), "old")
    assert cache.get(("k",)) == "new"
    cache.drop(("k",), "new")
    assert cache.get(("k",)) is None


def write_config(tmp_path, auths: dict) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    return str(path)


@pytest.mark.parametrize(
    ("key", "entry", "expected"),
    [
        ("ccr.local:5000", {"auth": base64.b64encode(b"bob:pa:ss").decode()}, Credentials("bob", "pa:ss")),
        ("https://ccr.local:5000/v1/", {"username": "bob", "password": "pw"}, Credentials("bob", "pw")),
        ("ccr.local:5000", {"identitytoken": "refresh-me"}, Credentials(identity_token="refresh-me")),
    ],
)
def test_credentials_come_from_a_docker_config_by_host_or_url(tmp_path, key, entry, expected):
    assert (
        load_credentials(write_config(tmp_path, {"other:1": {"auth": "eDp5"}, key: entry}), "https://ccr.local:5000")
        == expected
    )


def test_docker_hub_credentials_match_under_any_of_its_names(tmp_path):
    path = write_config(tmp_path, {"https://index.docker.io/v1/": {"username": "u", "password": "p"}})
    assert load_credentials(path, "https://registry-1.docker.io") == Credentials("u", "p")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"auths": {"elsewhere:5000": {"auth": "eDp5"}}}, "no entry for ccr.local:5000 .it has: elsewhere:5000"),
        ({"auths": {"ccr.local:5000": {"auth": "not base64!"}}}, "not base64"),
        ({"auths": {"ccr.local:5000": {}}}, "credential helpers are not supported"),
        ("not json", "not a docker config.json"),
    ],
)
def test_unusable_credentials_files_are_named_in_the_error(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(RegistryAuthError, match=message) as raised:
        load_credentials(str(path), "https://ccr.local:5000")
    assert str(path) in str(raised.value)


def test_a_missing_credentials_file_is_an_auth_error(tmp_path):
    with pytest.raises(RegistryAuthError, match="cannot read credentials file"):
        load_credentials(str(tmp_path / "absent.json"), "https://ccr.local:5000")


def test_credentials_hide_their_secrets():
    credentials = Credentials("bob", "hunter2", "refresh-me")
    assert "hunter2" not in repr(credentials) and "refresh-me" not in repr(credentials)
    authenticator = Authenticator("https://r", credentials, exchange=None, realm=None)
    authenticator.cache.put(("k",), "tok-123", 300)
    text = f"x hunter2 {credentials.basic_header()} refresh-me tok-123 y"
    assert authenticator.redact(text) == "x *** Basic *** *** *** y"


def judge_realm(url):
    return check_destination(url, insecure=False, listed=None, key="tokenHosts", trusted_host="r")


def test_a_bearer_realm_on_plain_http_is_refused_unless_insecure():
    calls = []
    authenticator = Authenticator("https://r", Credentials("u", "p"), lambda *args: calls.append(args), judge_realm)
    with pytest.raises(RegistryAuthError, match=r"token realm: http://evil.example \(https only\)"):
        authenticator.answer('Bearer realm="http://evil.example/token"', ("repository:a:pull",), "a", None, None)
    assert calls == []


def test_basic_without_credentials_or_with_refused_ones_is_an_auth_error():
    with pytest.raises(RegistryAuthError, match="none are configured"):
        Authenticator("https://r", None, None, None).answer('Basic realm="x"', (), "a", None, None)
    credentials = Credentials("u", "p")
    authenticator = Authenticator("https://r", credentials, None, None)
    header = authenticator.answer('Basic realm="x"', (), "a", None, None)
    assert header == credentials.basic_header() == authenticator.authorization((), "a", None)
    with pytest.raises(RegistryAuthError, match="refused the configured user and password"):
        authenticator.answer('Basic realm="x"', (), "a", None, refused=header)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, RegistryAuthError),
        (403, RegistryAuthError),
        (404, NotFound),
        (429, RateLimited),
        (500, RegistryServerError),
        (503, RegistryServerError),
        (400, RegistryProtocolError),
        (418, RegistryProtocolError),
    ],
)
def test_statuses_map_to_error_types_naming_endpoint_and_repository(status, kind):
    body = json.dumps({"errors": [{"code": "SOME_CODE", "message": "what went wrong", "detail": "ignored"}]}).encode()
    error = error_for_status(
        status,
        {"Retry-After": "3"},
        body,
        "HEAD manifest v1",
        endpoint="https://r.example",
        repository="team/app",
        missing=("manifest", "v1"),
    )
    assert type(error) is kind
    assert "https://r.example" in str(error) and "team/app" in str(error)
    if kind is not NotFound:
        assert "SOME_CODE: what went wrong" in str(error) and "ignored" not in str(error)


_UPLOAD = "/var/lib/registry/docker/registry/v2/repositories/team/app/_uploads/" + "x" * 80


@pytest.mark.parametrize(
    ("detail", "said"),
    [
        (f"write {_UPLOAD}/data: no space left on device", "UNKNOWN: unknown error: write /var/lib/registry/"),
        (
            {"DriverName": "filesystem", "Enclosed": {"Op": "write", "Path": f"{_UPLOAD}/startedat", "Err": 28}},
            "UNKNOWN: unknown error: filesystem: write /var/lib/registry/",
        ),
    ],
)
def test_the_detail_of_an_unknown_error_is_kept_so_a_full_disk_says_so(detail, said):
    body = json.dumps({"errors": [{"code": "UNKNOWN", "message": "unknown error", "detail": detail}]}).encode()
    error = error_for_status(
        500, {}, body, "upload blob sha256:1", endpoint="https://ccr.example", repository="team/app"
    )
    assert type(error) is RegistryServerError and isinstance(error, RegistryUnavailable)
    assert f"({said}" in str(error) and "no space left on device)" in str(error)


def test_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# -- token lifetimes (hostile token services: test_registry_hostile.py) --------------------------------------


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
