"""The registry client logging in to real registries: htpasswd Basic auth and token auth, never showing a secret."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.local_registry import client as make_client
from tests.support.registry_auth import PASSWORD, SECRETS, USER, assert_no_secret, basic_entry, docker_config
from webhook.registry.client import (
    OCI_MANIFEST,
    NotFound,
    RegistryAuthError,
)
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration


def test_basic_auth_with_configured_credentials(basic_registry, tmp_path):
    client = make_client(
        basic_registry.url,
        docker_config(tmp_path / "c.json", f"http://{basic_registry.host}/", username=USER, password=PASSWORD),
    )
    pushed = push_sample_image(client, "basic/app", "v1", [500], seed=4)
    assert client.resolve_digest("basic/app", "v1") == pushed.digest


@pytest.mark.parametrize("entry", [basic_entry(password="wrong-password"), None])
def test_basic_auth_refusal_is_an_auth_error_without_secrets(basic_registry, tmp_path, entry):
    credentials = docker_config(tmp_path / "c.json", basic_registry.host, **entry) if entry else None
    with pytest.raises(RegistryAuthError) as raised:
        make_client(basic_registry.url, credentials).resolve_digest("basic/app", "v1")
    assert basic_registry.url in str(raised.value) and "basic/app" in str(raised.value)
    assert_no_secret(raised.value, (*SECRETS, "wrong-password", entry["auth"] if entry else PASSWORD))


def test_tokens_are_fetched_once_per_scope_and_reused(token_registry, issuer, tmp_path):
    client = make_client(token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()))
    pushed = push_sample_image(client, "token/app", "v1", [100, 200], seed=5)
    assert issuer.hits("repository:token/app:pull,push") == 1
    for _ in range(3):
        assert client.resolve_digest("token/app", "v1") == pushed.digest
    assert issuer.hits("repository:token/app:pull") == 1
    with pytest.raises(NotFound):
        client.resolve_digest("token/other", "v1")
    assert issuer.hits("repository:token/other:pull") == 1
    assert all(request.user == USER for request in issuer.requests if request.granted and request.user)


def test_concurrent_requests_share_one_token_fetch(token_registry, issuer, tmp_path):
    writer = make_client(token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()))
    pushed = push_sample_image(writer, "token/busy", "v1", [100], seed=9)
    reader = make_client(
        token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()), max_connections=8
    )
    before = issuer.hits("repository:token/busy:pull")
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(lambda _: reader.resolve_digest("token/busy", "v1"), range(32)))
    assert digests == [pushed.digest] * 32
    assert issuer.hits("repository:token/busy:pull") == before + 1


def test_a_token_the_registry_refuses_is_fetched_again_once(token_registry, issuer, tmp_path):
    client = make_client(token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()))
    push_sample_image(client, "token/stale", "v1", [100], seed=6)
    client.resolve_digest("token/stale", "v1")
    key = (issuer.realm, issuer.service, ("repository:token/stale:pull",))
    client._auth.cache.put(key, "not-a-valid-token", 300)
    before = issuer.hits("repository:token/stale:pull")
    assert client.resolve_digest("token/stale", "v1").startswith("sha256:")
    assert issuer.hits("repository:token/stale:pull") == before + 1


def test_anonymous_tokens_pull_but_cannot_push(token_registry, issuer, tmp_path):
    writer = make_client(token_registry.url, docker_config(tmp_path / "c.json", token_registry.host, **basic_entry()))
    pushed = push_sample_image(writer, "token/public", "v1", [100], seed=7)
    anonymous = make_client(token_registry.url)
    assert anonymous.resolve_digest("token/public", "v1") == pushed.digest
    with pytest.raises(RegistryAuthError, match="access denied"):
        anonymous.put_manifest("token/public", "v2", anonymous.get_manifest("token/public", "v1").data, OCI_MANIFEST)


def test_an_identity_token_is_used_as_a_refresh_token(token_registry, issuer, tmp_path):
    credentials = docker_config(tmp_path / "c.json", token_registry.host, identitytoken="refresh-token-never-shown")
    client = make_client(token_registry.url, credentials)
    push_sample_image(client, "token/identity", "v1", [100], seed=8)
    assert [r.method for r in issuer.requests if "repository:token/identity:pull,push" in r.scopes] == ["POST"]


def test_token_service_refusal_is_an_auth_error_without_secrets(token_registry, tmp_path):
    credentials = docker_config(tmp_path / "c.json", token_registry.host, **basic_entry(password="wrong-password"))
    with pytest.raises(RegistryAuthError, match="token service refused the configured credentials") as raised:
        make_client(token_registry.url, credentials).resolve_digest("token/app", "v1")
    assert token_registry.url in str(raised.value) and "token/app" in str(raised.value)
    assert_no_secret(raised.value, ("wrong-password", basic_entry(password="wrong-password")["auth"]))
